"""Pins on the compose commands composeguard passes through that create containers.

``run`` and ``create`` are compose's own business, but a container they create from a pinned
service's tag would run the digest that failed: so, when this host has pins at all, they go
through here and compose gets the pin override like a guarded ``up``. Everything else, and
every command on a host without pins, is exec'd straight away by ``entry.py``: the check is
one directory listing, and this module imports only ``os`` until the pins are applied.
"""

from __future__ import annotations

import os

# The passed-through commands that create containers from a service's image.
CREATES_CONTAINERS = frozenset({"run", "create"})
# Their options that take a value (to find the service arguments).
OPTIONS_WITH_VALUE = {
    "run": {
        "--cap-add", "--cap-drop", "--entrypoint", "-e", "--env", "--env-from-file", "-l",
        "--label", "--name", "-p", "--publish", "--pull", "-u", "--user", "-v", "--volume",
        "-w", "--workdir",
    },
    "create": {"--pull", "--scale"},
}


def host_has_pins() -> bool:
    """True when some project on this host has a pin file (False when the state folder cannot
    be read: a user without root runs compose as it is, as with ``up``)."""
    projects = os.path.join(os.environ.get("COMPOSEGUARD_STATE_DIR") or "/var/lib/composeguard", "projects")
    try:
        with os.scandir(projects) as entries:
            return any(os.path.exists(os.path.join(e.path, "pins.yaml")) for e in entries)
    except OSError:
        return False


def named_services(command: str, args: list[str]) -> list[str]:
    """The services ``run``/``create`` ARGS name: run's first word, create's every word."""
    with_value = OPTIONS_WITH_VALUE[command]
    found: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if a.startswith("-") and a != "-":
            if a in with_value:
                i += 1
        else:
            found.append(a)
            if command == "run":
                break
        i += 1
    return found


def pinned_command(global_args: list[str], command: str, args: list[str]) -> list[str]:
    """The compose arguments for ``COMMAND ARGS`` with this project's pins applied: the
    project's files plus the applied pin file, or the user's own arguments when no pin
    applies or the project cannot be read (compose then says what is wrong in its own words)."""
    import logging

    from composeguard.compose.project import resolve
    from composeguard.errors import GuardError
    from composeguard.pins.pinfile import PinFile

    log = logging.getLogger("composeguard.pinned")

    try:
        project = resolve(global_args, services=named_services(command, args))
        pins = PinFile(project.name)
        pin_files = pins.applied_file(set(project.services))
    except (GuardError, OSError) as e:
        log.debug("pins not applied to %s: %s", command, e)
        return [*global_args, command, *args]
    if not pin_files:
        return [*global_args, command, *args]
    log.info("%s: pins applied (%s)", command, ", ".join(sorted(pins.pins)))
    base = project.compose_args(pin_files)
    from composeguard.compose.upargs import dry_run_options

    base = dry_run_options(global_args, base) + base
    return [*base, command, *args]
