"""The arguments of ``up``: which are services, which are options, the form composeguard runs
the new version with, and what of it the rollback repeats when it starts the old version."""

from __future__ import annotations

from collections.abc import Collection

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
    """(service names, options by long name) from ``up`` arguments, read as pflag reads them
    (up_tokens: ``-dt 5 app`` names the service app, not 5). A boolean option is True unless
    given ``=false`` (or another ParseBool word for false)."""
    tokens, services = up_tokens(args)
    opts: dict[str, str | bool] = {}
    for name, value in tokens:
        if name in UP_OPTIONS_WITH_VALUE:
            opts[name] = value or ""
        else:
            opts[name] = _flag_on(value)
    return services, opts


def up_options(args: list[str]) -> list[str]:
    """``up`` arguments without the service names, each option spelled out long (``-dt5``
    is ``--detach --timeout 5``): what composeguard passes on with services of its own."""
    out: list[str] = []
    for name, value in up_tokens(args)[0]:
        if value is None:
            out.append(name)
        elif name in UP_OPTIONS_WITH_VALUE:
            out += [name, value]
        else:
            out.append(f"{name}={value}")
    return out


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
    if not (opts.get("--detach") or opts.get("--wait")):
        out.insert(0, "--detach")
    return ["--pull", "missing", *out]


# `up` words compose accepts in any project (with such values): an `up` made only of these and
# the project's service names needs no `docker compose --dry-run up` to be checked first.
PLAIN_FLAGS = frozenset(
    {"-d", "--detach", "--wait", "--no-deps", "--remove-orphans", "--quiet-pull", "--force-recreate"}
)
PULL_POLICIES = frozenset({"always", "missing", "never", "build"})
SECONDS_OPTIONS = frozenset({"-t", "--timeout", "--wait-timeout"})


def plainly_valid(args: list[str], services: Collection[str]) -> bool:
    """Whether compose certainly accepts ``up ARGS``: each word is one of PLAIN_FLAGS, ``--pull
    POLICY``, whole seconds for ``-t``/``--timeout``/``--wait-timeout``, or a service of the
    project. Anything else (a typo, a cluster, another option, ``=`` on a flag) is left to
    compose's own dry run: a command line compose refuses must not stop anything."""
    i = 0
    while i < len(args):
        word = args[i]
        name, eq, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if not eq and (name == "--pull" or name in SECONDS_OPTIONS):
            if i + 1 >= len(args):
                return False
            i, eq, value = i + 1, "=", args[i + 1]
        if name == "--pull" and eq:
            ok = value in PULL_POLICIES
        elif name in SECONDS_OPTIONS and eq:
            ok = value.isdigit()
        else:
            ok = (name in PLAIN_FLAGS and not eq) or (not word.startswith("-") and word in services)
        if not ok:
            return False
        i += 1
    return True


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


# The one-letter options of `docker compose up` (pflag lets them be clustered: `-dV`, `-dt5`),
# by long name; only -t takes a value.
UP_SHORT = {"d": "--detach", "t": "--timeout", "V": "--renew-anon-volumes", "w": "--watch", "y": "--yes"}


def up_tokens(args: list[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """``up`` arguments as pflag reads them: ([(long option name, its value or None)], service
    names). Clusters of one-letter options are split (``-dVt5`` is -d, -V, -t 5), a value
    attached with ``=`` is taken off, and everything after ``--`` is a service name."""
    opts: list[tuple[str, str | None]] = []
    services: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if a == "--":
            services += args[i:]
            break
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if eq:
                opts.append((name, value))
            elif name in UP_OPTIONS_WITH_VALUE:
                opts.append((name, args[i] if i < len(args) else ""))
                i += 1
            else:
                opts.append((name, None))
        elif a.startswith("-") and len(a) > 1:
            letters = a[1:]
            for n, letter in enumerate(letters):
                name = UP_SHORT.get(letter)
                if name is None:  # not an option of up: keep the whole word, unknown
                    opts.append((a, None))
                    break
                if name in UP_OPTIONS_WITH_VALUE:
                    rest = letters[n + 1 :]
                    if rest:
                        opts.append((name, rest.removeprefix("=")))
                    else:
                        opts.append((name, args[i] if i < len(args) else ""))
                        i += 1
                    break
                opts.append((name, None))
        else:
            services.append(a)
    return opts, services


def replace_up_args(up_args: list[str], services: list[str]) -> list[str]:
    """The ``up`` that puts the new version's containers in place of the old ones of
    ``services`` without starting them (``--no-start``): compose creates each new container
    while the old one still runs, then stops and removes the old one, service by service, as
    a plain ``up`` would; the snapshots are taken after it and the new version's own ``up``
    only starts what is there. Carries over what shapes the containers (``--scale`` of these
    services, ``-V``), the stop grace (``-t``), ``--quiet-pull`` and the user's ``-y``; the
    rest is the second ``up``'s (see rollback_up_options for why each is kept)."""
    opts, _ = up_tokens(up_args)
    yes = [
        "--yes" for name, value in opts if name == "--yes" and _flag_on(value)
    ][:1]
    return [
        "--no-start", "--no-deps", "--pull", "missing",
        *rollback_up_options(up_args, services, recreate=True), *yes, *services,
    ]


def _flag_on(value: str | None) -> bool:
    """A boolean option given as ``--x`` or ``--x=<ParseBool word>``: whether it is set."""
    return value is None or value in TRUE_WORDS


def rollback_up_options(up_args: list[str], services: list[str], *, recreate: bool) -> list[str]:
    """The options of the journal's ``up_args`` (the upgrade's own ``up`` line) that the
    rollback's ``docker compose up`` of ``services`` must repeat, so that the old version comes
    back in the shape the user asked for; roll_back() sets the rest itself (``--detach``,
    ``--no-deps``, ``--pull missing``, ``--no-build`` and ``--force-recreate`` for the changed
    services, ``--no-recreate`` for the rest of the unit). ``recreate``: the call recreates its
    containers (the changed services) rather than starting the stopped ones as they were.

    Kept:

    * ``--scale S=N``, for the services of this call only: without it compose converges to
      the compose file's scale, so the old version of ``up --scale web=3`` came back as one
      container (and a dependency scaled up by the upgrade lost its extra replicas). A scale of
      a service outside the call is left out: the rollback touches nothing outside its unit,
      and compose may refuse a service the call does not select.
    * ``-t/--timeout N`` (the last one): how long the old containers get to stop cleanly.
    * ``-V/--renew-anon-volumes``, when the call recreates. With ``up -V`` the new version
      got fresh anonymous volumes: the old ones were left behind, unattached, holding the
      old version's data (restored from the snapshot if they were snapshotted, see
      storage/resolve.py: the mapper finds anonymous volumes from the container's mounts, so
      it saw the old version's). Compose cannot attach those again; what it can do is either
      carry over the anonymous volumes of the container it replaces (without -V: the new
      version's, populated from the new image, written to by the failed version and never
      snapshotted) or make fresh ones from the old image (with -V). The second is right: the
      user said the anonymous volumes are to be made anew from the image that runs, and the
      old version must not run on what the failed one left, which is kept unattached as
      part of the failed state. (The first call, ``--no-recreate``, leaves out -V: compose
      refuses the pair, and those containers were not recreated by the upgrade, so their
      anonymous volumes are the snapshotted ones.)
    * ``--quiet-pull``: output only (the old digest may have to be pulled again).

    Left out: the services the user named (the rollback names its own); ``--pull``,
    ``--build``/``--no-build`` (the old digest is never built: ``--build`` with the
    rollback's ``--no-build`` is refused), ``--force-recreate``/``--no-recreate``/
    ``--always-recreate-deps``/``--no-deps`` (the rollback decides what is recreated: a
    dependency never is, and compose refuses ``--always-recreate-deps`` with
    ``--no-recreate``); ``--remove-orphans`` (outside the unit; the upgrade removed them
    already); ``--wait``/``--wait-timeout`` (the rollback's own probe waits, within its
    deadline, before composeguard returns); ``--no-start`` (the old version must run);
    ``-y/--yes`` (never answer yes for the user on the way back: compose asks it before
    recreating a volume whose configuration changed); ``--dry-run``; and every option of an
    attached ``up`` (``--attach``, ``--no-attach``, ``--attach-dependencies``,
    ``--abort-on-container-exit|failure``, ``--exit-code-from``, ``--watch``, ``--menu``,
    ``--timestamps``, ``--no-color``, ``--no-log-prefix``), which compose refuses with
    ``--detach``. An option composeguard does not know is left out too: a restart that compose
    refuses would leave the unit down (exit 4), while a lost option only changes a detail."""
    opts, _ = up_tokens(up_args)
    wanted = set(services)
    scales: list[str] = []
    timeout: str | None = None
    renew = quiet_pull = False
    for name, value in opts:
        if name == "--scale" and value and value.partition("=")[0] in wanted:
            scales += ["--scale", value]
        elif name == "--timeout":
            timeout = value if value is not None and value.lstrip("-").isdigit() else None
        elif name == "--renew-anon-volumes":
            renew = _flag_on(value)
        elif name == "--quiet-pull":
            quiet_pull = _flag_on(value)
    out = scales + (["--timeout", timeout] if timeout is not None else [])
    if renew and recreate:
        out.append("--renew-anon-volumes")
    if quiet_pull:
        out.append("--quiet-pull")
    return out

