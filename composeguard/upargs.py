"""The arguments of ``up``: which are services, which are options, and the form composeguard
runs the new version with."""

from __future__ import annotations

# Options of `docker compose up` that take a value (to find the service arguments).
UP_OPTIONS_WITH_VALUE = {
    "--attach",
    "--exit-code-from",
    "--no-attach",
    "--pull",
    "--scale",
    "-t",
    "--timeout",
    "--wait-timeout",
}


def parse_up_args(args: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    """(service names, options) from ``up`` arguments."""
    services: list[str] = []
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if name in UP_OPTIONS_WITH_VALUE and not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            opts[name] = value if name in UP_OPTIONS_WITH_VALUE else True
        else:
            services.append(a)
        i += 1
    return services, opts


def upgrade_up_args(args: list[str]) -> list[str]:
    """The user's ``up`` arguments, made to start what was recorded and return to us:
    detached (the probe runs after ``up``), and no second pull (what starts is what was
    pulled and recorded)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--pull" and i + 1 < len(args):  # a --pull without its value stays, for compose to refuse
            i += 2
            continue
        if a.startswith("--pull="):
            i += 1
            continue
        out.append(a)
        i += 1
    _, opts = parse_up_args(out)
    if not any(k in opts for k in ("-d", "--detach", "--wait")):
        out.insert(0, "--detach")
    return ["--pull", "missing", *out]
