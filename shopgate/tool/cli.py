"""The `shopgate` command: one entry point, one subcommand per component.

Each subcommand lives in its own module and owns its own argument parser;
this module only dispatches, so that `shopgate --help` stays cheap.
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> ("module:function", one-line help). The function takes argv and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "catalog": ("catalog.server:main", "run the embedded Consul-compatible catalog"),
    "service": ("services.runner:main", "run one self-registering shop service instance"),
    "gateway": ("gateway.command:main", "run the gateway controller (supervises HAProxy)"),
    "registrar": ("registrar.docker_events:main", "register Docker containers from engine events"),
    "up": ("shopgate.tool.commands:up_main", "run the whole local stack"),
    "down": ("shopgate.tool.commands:down_main", "stop a detached local stack"),
    "status": ("shopgate.tool.commands:status_main", "show services, instances and gateway state"),
    "scale": ("shopgate.tool.commands:scale_main", "change the number of local instances of a service"),
    "demo": ("shopgate.tool.demo:main", "scripted scale-up/down demo under load"),
}


def usage() -> str:
    lines = ["usage: shopgate COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `shopgate COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"shopgate: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
