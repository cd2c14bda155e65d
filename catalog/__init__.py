"""The embedded single-node, Consul-HTTP-API-compatible catalog (`shopgate catalog`).

Layout, one job per module:

- `records`, `state`: the records and the pure store with Consul's index rules;
- `persist`: the SQLite write-ahead journal (`--data-dir`);
- `parsing`, `definitions`, `filtering`: request bodies, query strings, service/check
  definitions and `?filter=` expressions, with a clear 400 for bad input;
- `agent`: applies changes, commits them (journal, then wake-ups), reaps critical services;
- `checks`, `sessions`, `watch`: what runs on the clock — health checks, session TTLs
  and lock-delay, blocking queries;
- `shapes`, `responses`, `api_*`, `acl`, `server`: the HTTP API and the command.
"""
