-- visible_changes_for (0008) covers one audience as well as many: the single-audience function goes, so
-- that the policy evaluation exists once.
DROP FUNCTION fluxbase_realtime.visible_changes(text, jsonb, text, text, jsonb[], jsonb[]);
