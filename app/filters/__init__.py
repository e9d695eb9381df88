"""Row filters for table subscriptions: PostgREST syntax, PostgreSQL semantics.

`syntax` is the tree, `parse` turns a filter string into one (pure), `compile` turns a tree into a
parameterized SQL predicate, `evaluate` runs predicates over a batch of changes' records in PostgreSQL
and routes equality filters through an index.
"""
