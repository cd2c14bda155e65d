"""The operator tool, the top floor: `shopgate` and its commands, the demo, the load generator, the chart.

It stands on the ground floor (`shopgate.settings`, `shopgate.consul_client`, `shopgate.processes`)
and talks to the components over HTTP and through their public entry points; no component imports
anything from here.

    cli         the `shopgate` dispatcher (one subcommand per component or operator command)
    commands    `up`, `down`, `status`, `scale`: argument parsing, output, exit codes
    options     the options and SIGTERM handling that `up` and `demo` share
    lifecycle   start, scale and stop a local stack (what the commands, demo and benches call)
    probes      what the catalog and the gateway say: passing and routed instances
    manifest    a stack's records: ports, started processes, the manifest and its lock
    display     progress lines, tables, URLs
    demo        `shopgate demo`: the scripted scale demo under load
    load        the async load generator
    chart       the demo's chart
"""
