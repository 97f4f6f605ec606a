"""Build safety (issue 14): the build folder, `ftc eject`, and the locks given to `ftc run`, attacked as a stranger
or a careless user would. Each case either succeeds or refuses with a message that names the path and says what to
do, never with a traceback, never trusting a planted, linked or half-written file, and writing nothing outside
build/<name>/ (or DEST, for eject).

One tiny-model project is compiled once per module; each test works on its own copy of it (in its tmp_path, at
the same depth, so that the lock's relative model path still resolves).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from attack import ftc_in_process, snapshot, writes_outside

from ftc.compiler.build.compile import compile_build, write_build
from ftc.compiler.build.lock import LOCK_NAME
from ftc.runtime.run.execute import script_env

DATA = Path(__file__).resolve().parents[2] / "specs" / "data" / "ticket_triage"
BUILD = "build/tiny"
SPEC = """[project]
name = "{name}"
seed = 3

[model]
base = "{model}"

[data]
train = "data/train.jsonl"
validation = "data/val.jsonl"
format = "chat"
max_length = 1024
packing = false

[method]
kind = "lora"
r = 4
lora_alpha = 8
target_modules = "all-linear"

[training]
max_steps = {steps}
learning_rate = 1e-4
batch_size = 4
micro_batch_size = 4
report_to = []

[hardware]
accelerator = "cpu"
"""
# a planted file that leaves a mark when Python runs it
MARKER = "import pathlib; pathlib.Path({path!r}).write_text('ran')\n"


def write_project(root: Path, model: Path, name: str = "tiny", steps: int = 2, spec: str = "spec.toml") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    for source, target in (("train.jsonl", "train.jsonl"), ("val.jsonl", "val.jsonl")):
        lines = (DATA / source).read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "data" / target).write_text("".join(lines[:8]), encoding="utf-8")
    path = root / spec
    path.write_text(SPEC.format(name=name, model=os.path.relpath(model, path.parent), steps=steps), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_model) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    write_build(compile_build(write_project(root, tiny_model), root=root))
    return root


@pytest.fixture
def project(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True, symlinks=True)
    return tmp_path


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outside")


def ftc(project: Path, *args: str):
    outcome = ftc_in_process(*args, cwd=project)
    assert outcome.traceback is None, str(outcome)
    return outcome


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- files planted in the build folder: named by --check and run, never executed ------------------------------------

PLANTED = ["argparse.py", "sitecustomize.py", "usercustomize.py", "evil.pth", "helpers/json.py", "__pycache__/train.cpython-311.pyc"]


@pytest.mark.parametrize("name", PLANTED)
def test_a_planted_file_is_named_and_never_run(project, outside, name):
    mark = outside / "ran"
    planted = project / BUILD / name
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(MARKER.format(path=str(mark)), encoding="utf-8")
    for args in (("compile", "--check", "spec.toml"), ("run", "--samples", "0", "spec.toml"), ("run", "--samples", "0", BUILD)):
        outcome = ftc(project, *args)
        assert outcome.code == 1, str(outcome)
        assert f"{BUILD}/{name} is not in the lock" in outcome.stderr, str(outcome)
    assert not mark.exists()
    assert not (project / "runs").exists()


def test_the_script_runs_without_planted_startup_files(tmp_path):
    """Even past the checks, Python itself never runs sitecustomize.py, usercustomize.py or a .pth file that sits
    beside the script, nor imports a module planted there: the script runs in the environment `ftc run` gives it."""
    marks = {name: tmp_path / f"ran-{name}" for name in ("sitecustomize.py", "usercustomize.py", "evil.pth", "json.py")}
    folder = tmp_path / "build" / "tiny"
    folder.mkdir(parents=True)
    for name, mark in marks.items():
        (folder / name).write_text(MARKER.format(path=str(mark)), encoding="utf-8")
    (folder / "train.py").write_text("import json\nprint(json.dumps('ok'))\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(folder / "train.py")], env=script_env(), capture_output=True, text=True, cwd=folder, check=False)
    assert done.returncode == 0 and done.stdout.strip() == '"ok"', done.stderr
    assert [name for name, mark in marks.items() if mark.exists()] == []


# -- links and odd files in the build: refused before anything is read through them or written ---------------------


def _link_file(project: Path, outside: Path, name: str) -> Path:
    target = outside / name
    shutil.copyfile(project / BUILD / name, target)
    (project / BUILD / name).unlink()
    (project / BUILD / name).symlink_to(target)
    return target


def _link_build(project: Path, outside: Path) -> Path:
    shutil.move(project / BUILD, outside / "tiny")
    (project / BUILD).symlink_to(outside / "tiny", target_is_directory=True)
    return outside / "tiny"


def _link_build_root(project: Path, outside: Path) -> Path:
    shutil.move(project / "build", outside / "build")
    (project / "build").symlink_to(outside / "build", target_is_directory=True)
    return outside / "build"


def _link_folder(project: Path, outside: Path) -> Path:
    (project / BUILD / "helpers").symlink_to(outside, target_is_directory=True)
    return outside


LINKS = {
    "script": (lambda p, o: _link_file(p, o, "train.py"), f"{BUILD}/train.py is a symbolic link to"),
    "lock": (lambda p, o: _link_file(p, o, LOCK_NAME), f"{BUILD}/{LOCK_NAME} is a symbolic link to"),
    "template": (lambda p, o: _link_file(p, o, "chat_template.jinja"), f"{BUILD}/chat_template.jinja is a symbolic link to"),
    "build-folder": (_link_build, f"{BUILD} is a symbolic link to"),
    "build-root": (_link_build_root, "build is a symbolic link to"),
    "sub-folder": (_link_folder, f"{BUILD}/helpers is a symbolic link to"),
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_a_link_in_the_build_is_refused(project, outside, case):
    make, message = LINKS[case]
    target = make(project, outside)
    before_outside, before = snapshot(outside), snapshot(project)
    for args, code in (
        (("compile", "spec.toml"), 1),
        (("compile", "--check", "spec.toml"), 1),
        (("run", "--samples", "0", "spec.toml"), 1),
        (("run", "--samples", "0", BUILD), 1),
        (("eject", BUILD, "../mine"), 1),
    ):
        outcome = ftc(project, *args)
        assert outcome.code == code, str(outcome)
        assert message in outcome.stderr and str(target) in outcome.stderr, str(outcome)
    assert not (project.parent / "mine").exists()
    assert snapshot(outside) == before_outside
    assert snapshot(project) == before


ODD = {
    "fifo": (lambda b: os.mkfifo(b / "pipe"), f"{BUILD}/pipe is not a regular file"),
    "folder-for-script": (lambda b: ((b / "train.py").unlink(), (b / "train.py").mkdir()), f"{BUILD}/train.py is a folder where ftc writes a file"),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_an_odd_file_in_the_build_is_refused(project, case):
    make, message = ODD[case]
    make(project / BUILD)
    for args in (("compile", "spec.toml"), ("compile", "--check", "spec.toml"), ("run", "--samples", "0", "spec.toml")):
        outcome = ftc(project, *args)
        assert outcome.code == 1 and message in outcome.stderr, str(outcome)


@pytest.mark.parametrize("where", ["build", BUILD])
def test_a_file_where_the_build_folder_goes(project, where):
    shutil.rmtree(project / "build")
    (project / where).parent.mkdir(parents=True, exist_ok=True)
    (project / where).write_text("not a folder\n", encoding="utf-8")
    outcome = ftc(project, "compile", "spec.toml")
    assert outcome.code == 1 and f"{where} is a file, not a folder" in outcome.stderr, str(outcome)
    assert (project / where).read_text(encoding="utf-8") == "not a folder\n"
    outcome = ftc(project, "run", "--samples", "0", BUILD)
    assert outcome.code in (1, 2) and outcome.stderr.startswith("ftc run: "), str(outcome)


def _read_only(folder: Path) -> bool:
    """Make `folder` refuse new files: its mode, or, for root (whom modes do not stop), the immutable attribute."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.touch()
    except PermissionError:
        return True
    probe.unlink()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False).returncode == 0:
        return True
    folder.chmod(0o755)
    return False


def test_a_read_only_build_folder_is_refused_in_words(project):
    folder = project / BUILD
    before = snapshot(project)
    if not _read_only(folder):
        pytest.skip("this machine cannot make a folder read-only to this user")
    try:
        outcome = ftc(project, "compile", "spec.toml")
        assert outcome.code == 1 and f"ftc compile: refused to write {BUILD}/" in outcome.stderr, str(outcome)
        assert f"cannot write {BUILD}/{LOCK_NAME}" in outcome.stderr and "check that the folder is writable" in outcome.stderr, str(outcome)
        assert ftc(project, "compile", "--check", "spec.toml").code == 0
    finally:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True, check=False)
        folder.chmod(0o755)
    assert snapshot(project) == before


# -- locks that are not locks: every verb that reads one refuses in words ------------------------------------------

BAD_LOCKS = {
    "not-json": b"this is not json\n",
    "empty-object": b"{}",
    "list": b"[]",
    "string": b'"a lock"',
    "future-format": b'{"format_version": 99}',
    "truncated": None,  # the real lock cut in half, as a crash while writing it would leave it
    "not-utf8": b"\xff\xfe{\x00}\x00",
    "empty": b"",
}
READERS = {
    "run-spec": (("run", "--samples", "0", "spec.toml"), 1),
    "run-build": (("run", "--samples", "0", BUILD), 1),
    "check": (("compile", "--check", "spec.toml"), 1),
    "diff": (("diff", BUILD, f"{BUILD}/{LOCK_NAME}"), 1),
    "eject": (("eject", BUILD, "../mine"), 1),
}


@pytest.mark.parametrize("verb", sorted(READERS))
@pytest.mark.parametrize("lock", sorted(BAD_LOCKS))
def test_an_unreadable_lock_is_refused_by_every_reader(project, lock, verb):
    path = project / BUILD / LOCK_NAME
    path.write_bytes(BAD_LOCKS[lock] if BAD_LOCKS[lock] is not None else path.read_bytes()[: path.stat().st_size // 2])
    args, code = READERS[verb]
    before = snapshot(project)
    outcome = ftc(project, *args)
    assert outcome.code == code, str(outcome)
    assert f"{BUILD}/{LOCK_NAME}" in outcome.stderr and "ftc compile" in outcome.stderr, str(outcome)
    assert "Traceback" not in outcome.stderr
    assert writes_outside(before, snapshot(project), BUILD) == []
    assert not (project.parent / "mine").exists()


def test_a_lock_naming_files_outside_the_build_deletes_nothing(project):
    """A lock edited to list ../../spec.toml as an artifact: compiling (which removes the files an older build
    owned) must not delete the spec, and run and --check refuse the lock."""
    path = project / BUILD / LOCK_NAME
    path.write_text(path.read_text(encoding="utf-8").replace('"artifacts": {', '"artifacts": {\n    "../../spec.toml": "00",'), encoding="utf-8")
    for args in (("compile", "--check", "spec.toml"), ("run", "--samples", "0", BUILD)):
        outcome = ftc(project, *args)
        assert outcome.code == 1 and "'../../spec.toml' is not a file inside the build folder" in outcome.stderr, str(outcome)
    assert ftc(project, "compile", "spec.toml").code == 0
    assert (project / "spec.toml").is_file()
    assert ftc(project, "compile", "--check", "spec.toml").code == 0


# -- eject: never over the build or the inputs it copies from ------------------------------------------------------


@pytest.mark.parametrize(
    "dest, message",
    [
        (".", ". holds the build (build/tiny)"),
        (BUILD, f"{BUILD} is the build ({BUILD})"),
        (f"{BUILD}/mine", f"{BUILD}/mine lies inside the build ({BUILD})"),
        ("build", "build holds the build (build/tiny)"),
        ("data", "data holds the train data (data/train.jsonl)"),
        ("data/train.jsonl", "data/train.jsonl is the train data (data/train.jsonl)"),
        ("spec.toml", "spec.toml is the spec (spec.toml)"),
        ("MODEL/mine", "MODEL/mine lies inside the model (MODEL)"),
    ],
)
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_eject_refuses_a_destination_over_the_build_or_its_inputs(project, tiny_model, dest, message, force):
    dest, message = (text.replace("MODEL", os.path.relpath(tiny_model, project)) for text in (dest, message))
    before = snapshot(project)
    model_before = snapshot(tiny_model)
    outcome = ftc(project, "eject", BUILD, dest, *(["--force"] if force else []))
    assert outcome.code == 2, str(outcome)
    assert outcome.stderr.startswith(f"ftc eject: error: {message}") and "choose a new folder" in outcome.stderr, str(outcome)
    assert snapshot(project) == before and snapshot(tiny_model) == model_before
    assert ftc(project, "compile", "--check", "spec.toml").code == 0


def test_eject_with_force_writes_nothing_through_a_link(project, outside):
    """--force replaces DEST's files; a folder in DEST that links elsewhere is refused, a file that does is replaced
    by a plain file, and the file it pointed to is left as it was."""
    dest = project.parent / f"{project.name}-mine"
    (dest / "data").parent.mkdir()
    (dest / "data").symlink_to(outside, target_is_directory=True)
    outcome = ftc(project, "eject", BUILD, str(dest), "--force")
    assert outcome.code == 2 and f"{dest / 'data'} leads out of {dest}" in outcome.stderr, str(outcome)
    assert list(outside.iterdir()) == []
    (dest / "data").unlink()
    victim = outside / "victim.txt"
    victim.write_text("mine\n", encoding="utf-8")
    for name in ("train.py", "README.md"):
        (dest / name).symlink_to(victim)
    (dest / "data").mkdir()
    (dest / "data" / "train.jsonl").symlink_to(victim)
    outcome = ftc(project, "eject", BUILD, str(dest), "--force")
    assert outcome.code == 0, str(outcome)
    assert victim.read_text(encoding="utf-8") == "mine\n"
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert sha(dest / "data" / "train.jsonl") == sha(project / "data" / "train.jsonl")
    # copies are made like every other file: readable as the user's umask allows, not left private to the writer
    assert (dest / "data" / "train.jsonl").stat().st_mode & 0o777 == (dest / "README.md").stat().st_mode & 0o777 != 0o600


# -- odd arguments, as a stranger types them ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("run", f"{BUILD}/train.py"), 2, f"ftc run: error: {BUILD}/train.py is neither a spec (.toml) nor a build folder"),
        (("run", f"{BUILD}/{LOCK_NAME}"), 2, f"ftc run: error: {BUILD}/{LOCK_NAME} is neither a spec (.toml) nor a build folder"),
        (("run", "build"), 1, f"build has no {LOCK_NAME}"),
        (("run", "nothing/here"), 2, "ftc run: error: not found: nothing/here"),
        (("eject", f"{BUILD}/train.py", "../mine"), 2, f"ftc eject: error: {BUILD}/train.py is not a build folder"),
        (("eject", BUILD, f"{BUILD}/train.py"), 2, f"ftc eject: error: {BUILD}/train.py lies inside the build"),
        (("diff", f"{BUILD}/train.py", BUILD), 1, f"ftc diff: cannot read {BUILD}/train.py: not a readable lock"),
        (("plan", BUILD), 2, f"ftc plan: error: {BUILD} is a folder; give the spec file (.toml)"),
        (("compile", "--check", BUILD), 2, f"ftc compile: error: {BUILD} is a folder; give the spec file (.toml)"),
    ],
    ids=["run-script", "run-lock", "run-build-root", "run-missing", "eject-from-file", "eject-onto-file", "diff-script", "plan-build", "check-build"],
)
def test_odd_arguments(project, args, code, message):
    before = snapshot(project)
    outcome = ftc(project, *args)
    assert outcome.code == code and message in outcome.stderr, str(outcome)
    assert snapshot(project) == before


@pytest.mark.parametrize("verb", ["merge", "eval", "report"])
def test_a_build_given_where_a_run_folder_goes(project, verb):
    before = snapshot(project)
    outcome = ftc(project, verb, BUILD)
    assert outcome.code in (1, 2) and f"{BUILD} is not a run folder" in outcome.stderr, str(outcome)
    assert snapshot(project) == before


def test_eject_onto_a_file_is_a_usage_error(project):
    (project / "notes.txt").write_text("mine\n", encoding="utf-8")
    outcome = ftc(project, "eject", "--force", BUILD, "notes.txt")
    assert outcome.code == 2 and "ftc eject: error: notes.txt exists and is not a folder; choose a new folder" in outcome.stderr, str(outcome)
    assert (project / "notes.txt").read_text(encoding="utf-8") == "mine\n"


def test_paths_that_climb_with_dotdot(project):
    """Paths through `..` mean what they resolve to: a DEST that climbs back into the inputs is refused, a build
    named from a sub-folder is checked like any other, and a spec named through `..` compiles into the working folder's build/."""
    sub = project / "work"
    sub.mkdir()
    back = f"../../{project.name}"
    outcome = ftc(sub, "eject", "--force", f"../{BUILD}", f"{back}/data")
    assert outcome.code == 2 and "holds the train data (../data/train.jsonl)" in outcome.stderr, str(outcome)
    (project / BUILD / "argparse.py").write_text("raise SystemExit(7)\n", encoding="utf-8")
    outcome = ftc(sub, "run", "--samples", "0", f"../{BUILD}")
    assert outcome.code == 1 and f"../{BUILD}/argparse.py is not in the lock" in outcome.stderr, str(outcome)
    (project / BUILD / "argparse.py").unlink()
    assert ftc(project, "compile", "--check", "work/../spec.toml").code == 0
    assert not (project / "runs").exists() and sorted(p.name for p in sub.iterdir()) == []


def test_run_on_a_spec_with_errors_says_so(project):
    (project / "broken.toml").write_text("[project\n", encoding="utf-8")
    outcome = ftc(project, "run", "--samples", "0", "broken.toml")
    assert outcome.code == 1 and outcome.located, str(outcome)
    assert "broken.toml has errors (listed above)" in outcome.stderr and "does not match its inputs" not in outcome.stderr, str(outcome)


def test_run_refuses_a_build_folder_of_another_project(project):
    """build/other/ holding build/tiny's lock (a copied folder) would run build/tiny in its place."""
    shutil.copytree(project / BUILD, project / "build" / "other")
    outcome = ftc(project, "run", "--samples", "0", "build/other")
    assert outcome.code == 1 and "build/other holds the build of project 'tiny' (spec.toml)" in outcome.stderr, str(outcome)
    elsewhere = project / "copies" / "tiny"
    shutil.copytree(project / BUILD, elsewhere)
    outcome = ftc(project, "run", "--samples", "0", "copies/tiny")
    assert outcome.code == 1 and "a build runs only from build/tiny/ in its project" in outcome.stderr, str(outcome)
    assert not (project / "runs").exists()


def test_two_specs_with_one_project_name_do_not_overwrite_each_other(project, tiny_model):
    """A copy of the spec (same project.name) would silently take build/tiny/ from the first: refused, naming both."""
    write_project(project, tiny_model, steps=3, spec="experiment.toml")
    before = snapshot(project)
    outcome = ftc(project, "compile", "experiment.toml")
    assert outcome.code == 1, str(outcome)
    assert "build/tiny/ belongs to spec.toml, which also sets project.name = 'tiny', and this spec is experiment.toml" in outcome.stderr
    assert snapshot(project) == before
    assert ftc(project, "compile", "--check", "spec.toml").code == 0
    (project / "spec.toml").unlink()  # the first spec is gone (renamed): the folder is the new one's
    assert ftc(project, "compile", "experiment.toml").code == 0
    assert ftc(project, "compile", "--check", "experiment.toml").code == 0


def test_a_spec_in_another_folder_builds_under_the_working_folder(project, tiny_model):
    """`ftc compile ../spec.toml` from a sub-folder: the project root is the working folder; the build goes there,
    its lock names the spec relative to it, nothing is written beside the spec, and a warning says so (it may be
    meant, and may not)."""
    sub = project / "work"
    sub.mkdir()
    before = snapshot(project)
    outcome = ftc(sub, "compile", "../spec.toml")
    assert outcome.code == 0, str(outcome)
    assert "warning: ../spec.toml lies outside the working folder, which is the project root: the build went to build/tiny/ here" in outcome.stderr
    assert writes_outside(before, snapshot(project), "work/build/tiny") == []
    assert '"path": "../spec.toml"' in (sub / BUILD / LOCK_NAME).read_text(encoding="utf-8")
    assert ftc(sub, "compile", "--check", "../spec.toml").code == 0


# -- crash matrix, phase "compile while writing the build" --------------------------------------------------------

WRITE_EVENTS = ("open", "os.chmod", "os.rename", "os.remove")  # audit events of a file being made, filled, renamed, removed


def _write_and_die(build, kill_at: int) -> int:
    """Write `build` in a forked child that SIGKILLs itself at its `kill_at`-th file event inside the build folder
    (a temporary file created or made ready, a rename, a removal): a real kill -9 at a known point. Returns the
    child's wait status; a child that ran out of events first exits with their count."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        seen = [0]
        folder = str(build.directory)

        def die_at(event: str, args: tuple) -> None:
            if event in WRITE_EVENTS and args and str(args[0]).startswith(folder):
                if event == "open" and not (isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR)) and args[1] in (None, "r", "rb"):
                    return
                seen[0] += 1
                if seen[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

        sys.addaudithook(die_at)
        try:
            write_build(build)
        finally:
            os._exit(seen[0])
    return os.waitpid(pid, 0)[1]


def test_a_compile_killed_while_writing_is_never_trusted(project, tiny_model):
    """The build on disk is from an older spec; the new one is written and killed with SIGKILL at each of its
    file events in turn (a hook runs before its event, so the last kill lands just before the lock is renamed into
    place). After each kill, `ftc compile --check` and `ftc run` refuse with a reason, never trusting the mix of old
    and new files; a second compile repairs the folder, leaving no temporary file behind. Unkilled, the same
    write gives a build that --check finds current."""
    write_project(project, tiny_model, steps=3)  # spec.toml now differs from the build on disk
    build = compile_build(project / "spec.toml", root=project)
    old_build = project.parent / f"{project.name}-old-build"
    shutil.copytree(project / BUILD, old_build)
    status = _write_and_die(build, kill_at=10**6)
    assert os.WIFEXITED(status), status
    events = os.WEXITSTATUS(status)
    assert events >= 3 * len(build.files)  # each file is created, made ready and renamed into place
    assert ftc(project, "compile", "--check", "spec.toml").code == 0
    for kill_at in range(1, events + 1):
        shutil.rmtree(project / BUILD)
        shutil.copytree(old_build, project / BUILD)
        status = _write_and_die(build, kill_at)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (kill_at, status)
        check = ftc(project, "compile", "--check", "spec.toml")
        assert check.code == 1 and "run `ftc compile spec.toml`" in check.stderr, (kill_at, str(check))
        run = ftc(project, "run", "--samples", "0", "spec.toml")
        assert run.code == 1 and "ftc run: refused:" in run.stderr, (kill_at, str(run))
        assert not (project / "runs").exists()
        assert ftc(project, "compile", "spec.toml").code == 0, kill_at
        assert ftc(project, "compile", "--check", "spec.toml").code == 0, kill_at
        assert sorted(p.name for p in (project / BUILD).iterdir()) == sorted(build.files), kill_at
