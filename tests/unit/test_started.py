"""update --all reads back how each project was started from its containers' labels
(composeguard/compose/started.py). Docker itself is exercised in tests/lab/test_project_env.py."""

from __future__ import annotations

from pathlib import Path

from composeguard.compose.started import split_paths, started_project

P = "com.docker.compose."


def container(service: str, files: str, workdir: str, env: str | None = None, oneoff: bool = False) -> dict:
    labels = {P + "project": "shop", P + "service": service, P + "project.config_files": files,
              P + "project.working_dir": workdir, P + "oneoff": "True" if oneoff else "False"}
    if env is not None:
        labels[P + "project.environment_file"] = env
    return {"Config": {"Labels": labels}}


def make(tmp_path: Path, *names: str) -> list[str]:
    out = []
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_text("services: {}\n")
        out.append(str(tmp_path / n))
    return out


def test_plain_list(tmp_path):
    a, b = make(tmp_path, "compose.yaml", "prod.yaml")
    assert split_paths(f"{a},{b}") == [a, b]


def test_a_path_with_a_comma_is_joined_back(tmp_path):
    a, b = make(tmp_path, "compose.yaml", "compose,prod.yaml")
    assert split_paths(f"{a},{b}") == [a, b]
    [c] = make(tmp_path, "dir,with,commas/compose.yaml")
    assert split_paths(c) == [c]


def test_a_file_that_is_gone_is_not_guessed(tmp_path):
    [a] = make(tmp_path, "compose.yaml")
    assert split_paths(f"{a},{tmp_path}/gone.yaml") is None
    assert split_paths("") is None


def test_an_ambiguous_list_is_not_guessed(tmp_path):
    """"T/a,T/b" is both the two files T/a and T/b and the one file "T/a," + "T/b" (a folder
    named "a," holding the path T/b again): two readings, so neither is guessed."""
    a, b = make(tmp_path, "a", "b")
    nested = tmp_path / "a," / str(tmp_path).lstrip("/") / "b"
    nested.parent.mkdir(parents=True)
    nested.write_text("")
    assert Path(f"{a},{b}") == nested
    assert split_paths(f"{a},{b}") is None
    nested.unlink()
    assert split_paths(f"{a},{b}") == [a, b]


def test_a_relative_piece_is_part_of_the_previous_path(tmp_path):
    [xy] = make(tmp_path, "x,y.yaml")
    make(tmp_path, "x", "y.yaml")  # "y.yaml" alone is not absolute, so it cannot be a file of its own
    assert split_paths(xy) == [xy]


def test_project_args_from_labels(tmp_path):
    a, b = make(tmp_path, "compose.yaml", "compose,prod.yaml")
    [e] = make(tmp_path, "custom.env")
    d = str(tmp_path)
    cs = [container("app", f"{a},{b}", d, env=e), container("extra", f"{a},{b}", d, env=e),
          container("app", f"{a},{b}", d, oneoff=True)]
    sp = started_project("shop", cs)
    assert sp.problem == ""
    assert sp.services == ["app", "extra"]
    assert sp.global_args == ["-p", "shop", "--project-directory", str(tmp_path), "-f", a, "-f", b,
                              "--env-file", e]


def test_containers_that_disagree_are_reported(tmp_path):
    a, b = make(tmp_path, "compose.yaml", "prod.yaml")
    d = str(tmp_path)
    sp = started_project("shop", [container("app", a, d), container("db", f"{a},{b}", d)])
    assert "different compose files" in sp.problem and sp.global_args == []


def test_gone_files_folder_or_env_file_are_reported(tmp_path):
    [a] = make(tmp_path, "compose.yaml")
    assert "cannot tell which compose files" in started_project(
        "shop", [container("app", f"{a},{tmp_path}/gone.yaml", str(tmp_path))]).problem
    assert "working folder" in started_project("shop", [container("app", a, str(tmp_path / "nope"))]).problem
    gone_env = container("app", a, str(tmp_path), env="/nope.env")
    assert "env files" in started_project("shop", [gone_env]).problem
    assert "one-off" in started_project("shop", [container("app", a, str(tmp_path), oneoff=True)]).problem


def pin_overlay(state: Path, project: str = "shop", exists: bool = True, header: bool = True) -> str:
    f = state / "projects" / project / "pins.applied.yaml"
    if exists:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(("# composeguard pins for project shop.\n" if header else "") + "services: {}\n")
    return str(f)


def test_the_pin_overlay_is_not_passed_back_as_a_compose_file(tmp_path):
    """After a rollback the pinned containers were created with composeguard's applied pin
    file; update --all must run the project on the user's files alone (the pin is applied, or
    lifted, by composeguard itself), or the service stays on the pinned digest for ever."""
    [a] = make(tmp_path, "srv/compose.yaml")
    d = str(tmp_path / "srv")
    for overlay in (pin_overlay(tmp_path / "state"), pin_overlay(tmp_path / "gone", exists=False)):
        sp = started_project("shop", [container("app", f"{a},{overlay}", d), container("db", a, d)])
        assert sp.problem == ""  # db was kept as it was by the rollback: same user files
        assert sp.global_args == ["-p", "shop", "--project-directory", d, "-f", a]


def test_a_users_file_that_merely_has_the_name_is_kept(tmp_path):
    [a] = make(tmp_path, "srv/compose.yaml")
    theirs = pin_overlay(tmp_path / "mine", header=False)
    sp = started_project("shop", [container("app", f"{a},{theirs}", str(tmp_path / "srv"))])
    assert sp.global_args[-2:] == ["-f", theirs]
