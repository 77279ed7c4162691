"""The shipped systemd units (contrib/systemd/*.service) leave composeguard in the host's mount
namespace, with the devices and mode bits a restore needs, and run the installed command.

A ZFS whole-dataset restore unmounts and mounts datasets; in a mount namespace of the unit's
own those mounts never reach the host (systemd.exec(5): no propagation from the unit to the
host), so dockerd would not see the restored data. No root, no systemd needed: the files are
parsed here. `systemd-analyze verify` runs on them in lab/units-check.sh.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "contrib" / "systemd").glob("*.service"))
EXECUTABLE = "/usr/local/bin/composeguard"  # where README's install puts it

OFF = frozenset({"no", "false", "off", "0", "n", "f"})  # systemd's parse_boolean() "false"

# The options that make systemd give a service a mount namespace of its own, and the values
# that leave them off ("" — an empty assignment resets the option — is off for every one).
# Source: exec_needs_mount_namespace() in src/core/execute.c, read in systemd v252 (Debian 12's
# 252.39, `apt-get source systemd`) and on main (stored snapshot at commit 0014db8f771f); the
# option names from src/core/load-fragment-gperf.gperf.in of both. Only main: marked.
_ANY: frozenset[str] = frozenset()  # any non-empty value turns it on
MOUNT_NAMESPACE_OPTIONS: dict[str, frozenset[str]] = {
    # context->root_image; RootDirectory= with MountAPIVFS= (on by default with a root
    # directory: exec_context_get_effective_mount_apivfs()) or with *Directory= (refused here
    # even with MountAPIVFS=no: a chroot would not see the host's mounts either)
    "RootImage": _ANY,
    "RootDirectory": _ANY,
    # read_write_paths, read_only_paths, inaccessible_paths, exec_paths, no_exec_paths
    "ReadWritePaths": _ANY,
    "ReadOnlyPaths": _ANY,
    "InaccessiblePaths": _ANY,
    "ReadWriteDirectories": _ANY,  # old names of the three above, same fields
    "ReadOnlyDirectories": _ANY,
    "InaccessibleDirectories": _ANY,
    "ExecPaths": _ANY,
    "NoExecPaths": _ANY,
    # n_bind_mounts, n_temporary_filesystems, n_mount_images, n_extension_images,
    # extension_directories
    "BindPaths": _ANY,
    "BindReadOnlyPaths": _ANY,
    "TemporaryFileSystem": _ANY,
    "MountImages": _ANY,
    "ExtensionImages": _ANY,
    "ExtensionDirectories": _ANY,
    # mount_flags (v252) / mount_propagation_flag (main) other than shared
    "MountFlags": frozenset({"shared"}),
    # private_tmp (v252: with the runtime's tmp dirs, which PrivateTmp= always has; main: also
    # "disconnected")
    "PrivateTmp": OFF,
    "PrivateDevices": OFF,
    "PrivateMounts": OFF,
    "ProtectSystem": OFF,
    "ProtectHome": OFF,
    "ProtectKernelTunables": OFF,
    "ProtectKernelModules": OFF,
    "ProtectKernelLogs": OFF,
    "ProtectControlGroups": OFF,  # main: also private, strict (exec_needs_cgroup_mount())
    "ProtectProc": frozenset({"default"}),
    "ProcSubset": frozenset({"all"}),
    "PrivateIPC": OFF,  # v252: private_ipc; main: exec_needs_ipc_namespace()
    "IPCNamespacePath": _ANY,
    # dynamic_user with State/Cache/LogsDirectory=; DynamicUser= also sets PrivateTmp= and
    # ProtectSystem=strict (unit_patch_contexts() in src/core/unit.c, v252)
    "DynamicUser": OFF,
    "LogNamespace": _ANY,  # v252: log_namespace; main: exec_context_get_effective_bind_log_sockets()
    # Only main:
    "MountAPIVFS": OFF,  # v252 only with RootDirectory=; main: bind_log_sockets even without
    "BindLogSockets": OFF,
    "PrivatePIDs": OFF,  # exec_needs_pid_namespace()
    "PrivateBPF": OFF,
    # private_mounts < 0 && exec_needs_network_namespace(): PrivateNetwork= or
    # NetworkNamespacePath= bring a mount namespace unless PrivateMounts=no is set (refused
    # here either way: notifications and the hook need the host's network)
    "PrivateNetwork": OFF,
    "NetworkNamespacePath": _ANY,
}
# main: a read-only exec directory (EXEC_DIRECTORY_READ_ONLY, written `path:dest:ro` or `path::ro`)
EXEC_DIRECTORIES = ("RuntimeDirectory", "StateDirectory", "CacheDirectory", "LogsDirectory",
                    "ConfigurationDirectory")

# No mount namespace, but they break what a restore must do (v252 source, as above):
BREAKS_RESTORES: dict[str, tuple[frozenset[str], str]] = {
    # src/core/cgroup.c cgroup_apply_devices(): DevicePolicy=auto with any DeviceAllow= is an
    # allow-list (bpf_devices_allow_list_static() + the entries), everything else denied
    "DeviceAllow": (_ANY, "blocks every other device: the block device a Btrfs top-level "
                          "mount opens, mknod of device nodes in a restored tree"),
    "DevicePolicy": (frozenset({"auto"}), "closed/strict deny all but a few devices"),
    # src/shared/seccomp-util.c seccomp_restrict_suid_sgid(): chmod/fchmod/fchmodat/mkdir/
    # mkdirat/mknod/open/openat/creat with S_ISUID or S_ISGID fail
    "RestrictSUIDSGID": (OFF, "an exact directory restore sets setuid/setgid bits"),
    "PrivateUsers": (OFF, "root only inside a user namespace: no mount(2), no ZFS/Btrfs admin"),
}


def parse_unit(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (a key may repeat), with
    backslash continuation lines joined and comments skipped, as systemd reads them."""
    out: list[tuple[str, str, str]] = []
    section = ""
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if pending and line[:1] in ("#", ";"):
            continue  # a comment inside a continued value is dropped
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def mount_namespace_options(assignments: list[tuple[str, str, str]]) -> list[str]:
    """The assignments in [Service] that give the unit a mount namespace of its own."""
    found = []
    for section, key, value in assignments:
        if section != "Service" or not value:
            continue
        off = MOUNT_NAMESPACE_OPTIONS.get(key)
        if off is not None and value.lower() not in off:
            found.append(f"{key}={value}")
        if key in EXEC_DIRECTORIES and any(
            item.split(":")[2:3] == ["ro"] for item in value.split()
        ):
            found.append(f"{key}={value}")
    return found


def restore_breakers(assignments: list[tuple[str, str, str]]) -> list[str]:
    """The assignments in [Service] of BREAKS_RESTORES, with why."""
    found = []
    for section, key, value in assignments:
        if section == "Service" and value and key in BREAKS_RESTORES:
            off, why = BREAKS_RESTORES[key]
            if value.lower() not in off:
                found.append(f"{key}={value}: {why}")
    return found


def exec_start_binaries(assignments: list[tuple[str, str, str]]) -> list[str]:
    """The program of each ExecStart=, without systemd's prefixes (- @ : + ! !!)."""
    return [value.split()[0].lstrip("-@:+!") for section, key, value in assignments
            if section == "Service" and key == "ExecStart" and value]


def test_the_units_are_there() -> None:
    assert {u.name for u in UNITS} >= {"composeguard-update.service", "composeguard-recover.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_no_option_creates_a_mount_namespace(unit: Path) -> None:
    found = mount_namespace_options(parse_unit(unit))
    assert found == [], (
        f"{unit.name}: {', '.join(found)} give the service a mount namespace of its own: "
        "mounts a restore makes would not reach the host (dockerd sees no restored data)"
    )


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_no_option_blocks_what_a_restore_does(unit: Path) -> None:
    found = restore_breakers(parse_unit(unit))
    assert found == [], f"{unit.name}: " + "; ".join(found)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_exec_start_runs_the_installed_composeguard(unit: Path) -> None:
    binaries = exec_start_binaries(parse_unit(unit))
    assert binaries, f"{unit.name} has no ExecStart="
    assert set(binaries) == {EXECUTABLE}, f"{unit.name}: ExecStart runs {binaries}"


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The parser and both lists catch what they should (so an empty result above means
    something), and leave alone what is off or harmless."""
    unit = tmp_path / "x.service"
    unit.write_text(
        "[Unit]\nDescription=x\n# PrivateTmp=yes\n"
        "[Service]\nExecStart=-/usr/local/bin/composeguard update \\\n  --all\n"
        "PrivateTmp=no\nProtectSystem=strict\nReadWritePaths=\nReadOnlyPaths=/a \\\n /b\n"
        "ProtectProc=default\nProtectHome=read-only\nMountFlags=shared\nStateDirectory=cg\n"
        "CacheDirectory=a:b:ro\nNoNewPrivileges=yes\nProtectClock=yes\nDeviceAllow=/dev/zfs rw\n"
        "RestrictSUIDSGID=no\n"
    )
    a = parse_unit(unit)
    assert mount_namespace_options(a) == [
        "ProtectSystem=strict", "ReadOnlyPaths=/a /b", "ProtectHome=read-only", "CacheDirectory=a:b:ro",
    ]
    assert exec_start_binaries(a) == ["/usr/local/bin/composeguard"]
    assert [f.split(":")[0] for f in restore_breakers(a)] == ["DeviceAllow=/dev/zfs rw"]
