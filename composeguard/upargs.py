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


# strconv.ParseBool, which compose's boolean flags use: `--dry-run=<one of these>`.
TRUE_WORDS = frozenset({"1", "t", "T", "TRUE", "true", "True"})
FALSE_WORDS = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def is_dry_run(args: list[str], with_value: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether ``args`` (compose global options, or ``up``'s) ask for a dry run, in any spelling
    compose accepts: ``--dry-run``, ``--dry-run=true``/``=1``/``=T`` …; the last one wins, and
    ``--dry-run=false`` is no dry run. A value compose would refuse counts as a dry run:
    compose then says what is wrong, and nothing is snapshotted. ``with_value``: the options
    whose next word is their value (not an option)."""
    dry = False
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a in with_value:
            i += 2
            continue
        name, eq, value = a.partition("=")
        if name == "--dry-run":
            dry = not eq or value not in FALSE_WORDS
        i += 1
    return dry


def dry_run_options(args: list[str], already: list[str] | None = None) -> list[str]:
    """The ``--dry-run`` words of ``args`` as the user spelled them (not those in ``already``):
    what composeguard puts back in front of compose arguments it builds itself."""
    return [a for a in args if a.partition("=")[0] == "--dry-run" and a not in (already or [])]
