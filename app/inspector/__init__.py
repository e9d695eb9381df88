"""The inspector: a page served by the service (`/inspector`, REALTIME_INSPECTOR=true) that shows who is
connected and to what, tails a channel, shows presence and sends a test broadcast.

The page is static and public (it holds nothing but a form asking for a service_role token); every piece of
data it shows comes from a service_role-only endpoint or over the WebSocket with that token. Its script is
built from `clients/inspector/` (the TypeScript SDK bundled with esbuild) and committed under `static/`, so
that the service serves it without npm; `clients/inspector`'s test proves the committed bundle is a fresh
build.
"""
