"""composeguard's COMPOSEGUARD_* environment from the role's variables, and the text of the
environment file the systemd units read. Only the variables composeguard reads (README,
"Settings" and "Being told what happened"); an unknown setting is an error, not a new variable.
"""

from __future__ import annotations

import shlex

# x-composeguard's project-level keys that a COMPOSEGUARD_<KEY> variable overrides.
SETTINGS = ("timeout", "settle", "retention", "unprotected", "min_free", "btrfs_snapshot_dir", "update")

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # read by a test without Ansible
    AnsibleFilterError = ValueError  # noqa: N816


def _text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def composeguard_env(state_dir="", hook=None, notify=None, prometheus_file="", settings=None):
    """-> {COMPOSEGUARD_*: text}. ``hook``: a list of words (or one string, split as
    composeguard splits COMPOSEGUARD_HOOK); ``notify``: Apprise URLs; ``settings``: the other
    project-level overrides by x-composeguard key."""
    env = {}
    if state_dir:
        env["COMPOSEGUARD_STATE_DIR"] = str(state_dir)
    if hook:
        words = shlex.split(hook) if isinstance(hook, str) else [str(w) for w in hook]
        env["COMPOSEGUARD_HOOK"] = shlex.join(words)
    if notify:
        env["COMPOSEGUARD_NOTIFY"] = notify if isinstance(notify, str) else " ".join(str(u) for u in notify)
    if prometheus_file:
        env["COMPOSEGUARD_PROMETHEUS_FILE"] = str(prometheus_file)
    for key, value in sorted((settings or {}).items()):
        if key not in SETTINGS:
            raise AnsibleFilterError(
                f"composeguard_settings: unknown setting {key!r} (composeguard reads: {', '.join(SETTINGS)})"
            )
        env[f"COMPOSEGUARD_{key.upper()}"] = _text(value)
    return env


def composeguard_env_file(env):
    """KEY="value" lines, quoted so that both systemd's EnvironmentFile= and a POSIX shell
    (`set -a; . FILE`) read back the same value."""
    lines = []
    for key, value in sorted((env or {}).items()):
        if "\n" in str(value) or "\r" in str(value):
            raise AnsibleFilterError(f"{key}: a value on more than one line cannot go in an environment file")
        quoted = "".join("\\" + ch if ch in '\\"$`' else ch for ch in str(value))
        lines.append(f'{key}="{quoted}"')
    return "\n".join(lines) + ("\n" if lines else "")


class FilterModule:
    def filters(self):
        return {"composeguard_env": composeguard_env, "composeguard_env_file": composeguard_env_file}
