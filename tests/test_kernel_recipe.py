"""Guest kernel recipes (issue 22): the pure part (runner.provision.kernel), the matrix's `guest_kernels`
recipe entries, every bad recipe (one line naming the file and the key path, exit 2 from the CLI), the
cache lookup and what the trials record; no kernel is built here (tests/test_kernel_build.py builds one)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import MatrixError
from runner.matrix.load import parse_matrix
from runner.provision import kernel as kr
from runner.provision import kernelbuild as kb
from runner.provision import kernelfacts as kf
from runner.trials import plan

BASE = "campaign: c\nworkload: {name: lockbench, params: {env: kvm}}\nrepetitions: 1\n"


def matrix(tmp_path: Path, kernels: str, axes: str = "axes: {guest_kernel: [pv]}\n") -> Path:
    path = tmp_path / "m.yml"
    path.write_text(BASE + kernels + axes)
    return path


def load(path: Path):  # noqa: ANN201
    return parse_matrix(path.read_text(), path)


# ------------------------------------------------------------------------------------------ the model


def test_a_recipe_is_resolved_from_the_matrix_folder_and_reaches_the_trials(tmp_path: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches/a.patch").write_text("x\n")
    (tmp_path / "tree").mkdir()
    path = matrix(tmp_path, "guest_kernels:\n  pv: {build: {source: tree, patches: [patches/a.patch], config: tinyconfig,"
                            " fragments: [kvm_guest.config], set: {PARAVIRT_SPINLOCKS: n, NR_CPUS: 64, LOCALVERSION: -lab}},"
                            " cmdline: nopvspin}\n")
    trials = plan(load(path), {"h": 2})
    spec = trials[0].param_dict["guest_kernel_spec"]
    assert spec == {"build": {"source": str(tmp_path / "tree"), "patches": [str(tmp_path / "patches/a.patch")], "config": "tinyconfig",
                              "fragments": ["kvm_guest.config"], "set": {"LOCALVERSION": '"-lab"', "NR_CPUS": "64", "PARAVIRT_SPINLOCKS": "n"}},
                    "cmdline": "nopvspin"}
    recipe = kb.recipes_of([trials[0].param_dict])["pv"]
    assert recipe.source_kind == "tree" and recipe.set == (("LOCALVERSION", '"-lab"'), ("NR_CPUS", "64"), ("PARAVIRT_SPINLOCKS", "n"))
    assert recipe.cmdline == "nopvspin"


def test_path_entries_still_work_beside_recipes(tmp_path: Path) -> None:
    path = matrix(tmp_path, "guest_kernels:\n  lab: {kernel: /boot/vmlinuz-lab}\n  pv: {build: {source: linux-source, config: tinyconfig}}\n",
                  "axes: {guest_kernel: [lab, pv]}\n")
    specs = {t.param_dict["guest_kernel"]: t.param_dict["guest_kernel_spec"] for t in plan(load(path), {"h": 2})}
    assert specs["lab"] == {"kernel": "/boot/vmlinuz-lab"}
    assert specs["pv"] == {"build": {"source": "linux-source", "config": "tinyconfig"}}


@pytest.mark.parametrize(("value", "written"), [("y", "y"), ("n", "n"), ("m", "m"), (True, "y"), (False, "n"), (64, "64"),
                                                 ("0x1000", "0x1000"), ("-lab", '"-lab"')])
def test_set_values_are_written_as_a_config_writes_them(value: object, written: str) -> None:
    assert kr.config_value(value) == written


def test_additions_give_kvm_and_xen_guests_their_drivers_built_in_as_the_recipe_allows() -> None:
    plain = kr.additions(kr.Recipe("pv", "linux-source"))
    for sym in ("VIRTIO_BLK", "VIRTIO_NET", "VIRTIO_CONSOLE", "XEN_PV", "XEN_PVH", "XEN_BLKDEV_FRONTEND", "XEN_NETDEV_FRONTEND",
                "HVC_XEN", "PARAVIRT", "PARAVIRT_SPINLOCKS", "KVM_GUEST", "BLK_DEV_INITRD", "DEVTMPFS"):
        assert plain[sym] == "y"
    nopv = kr.additions(kr.Recipe("nopv", "linux-source", set=(("PARAVIRT_SPINLOCKS", "n"),)))
    assert "PARAVIRT_SPINLOCKS" not in nopv and nopv["XEN_PV"] == "y"  # the recipe decides its own symbols
    # Without PARAVIRT, neither KVM's nor Xen's guest support can be had: the runner does not ask for them.
    bare = kr.additions(kr.Recipe("bare", "linux-source", set=(("PARAVIRT", "n"),)))
    assert not {"PARAVIRT", "KVM_GUEST", "PARAVIRT_SPINLOCKS", "XEN", "XEN_PV", "HVC_XEN"} & set(bare)
    assert bare["VIRTIO_NET"] == "y"
    text = kr.fragment_text(kr.Recipe("nopv", "linux-source", set=(("NR_CPUS", "8"), ("PARAVIRT_SPINLOCKS", "n"))))
    assert text.splitlines()[-2:] == ["CONFIG_NR_CPUS=8", "# CONFIG_PARAVIRT_SPINLOCKS is not set"]


def test_the_check_names_each_dropped_or_changed_symbol_what_was_asked_and_what_it_became() -> None:
    recipe = kr.Recipe("pv", "linux-source", set=(("PARAVIRT_SPINLOCKS", "n"), ("NR_CPUS", "64"), ("NOT_IN_THIS_KERNEL", "y")))
    asked = kr.wanted(recipe, {"kvm_guest.config": "CONFIG_KVM_GUEST=y\nCONFIG_VIRTIO_BLK=y\n# CONFIG_DEBUG_INFO is not set\n"})
    final = {**dict.fromkeys(kr.additions(recipe), "y"), "NR_CPUS": "8", "VIRTIO_BLK": "m"}
    wrong = kr.config_mismatches(asked, final)
    assert wrong == [
        "CONFIG_VIRTIO_BLK: asked y (added by the runner), is m",
        "CONFIG_NR_CPUS: asked 64 (set), is 8",
        "CONFIG_NOT_IN_THIS_KERNEL: asked y (set), is not set (an unmet dependency, or a symbol this kernel does not have)",
    ]
    # The tree's own fragments serve every architecture: what this kernel does not take is a note; a fragment
    # file of the recipe's is checked like set:.
    asked = kr.wanted(kr.Recipe("x", "linux-source"), {"kvm_guest.config": "CONFIG_S390_GUEST=y\n", "/lab/spin.config": "CONFIG_QUEUED_SPINLOCKS=n\n"})
    wrong, notes = kr.split_mismatches(kr.config_mismatches(asked, {**dict.fromkeys(kr.additions(kr.Recipe("x", "linux-source")), "y"),
                                                                     "QUEUED_SPINLOCKS": "y"}))
    assert notes == ["CONFIG_S390_GUEST: asked y (the tree's fragment kvm_guest.config), is not set (an unmet dependency, or a symbol this kernel does not have)"]
    assert wrong == ["CONFIG_QUEUED_SPINLOCKS: asked n (fragment /lab/spin.config), is y"]


def test_parse_config_reads_values_and_unset_symbols() -> None:
    text = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\n# a comment\nCONFIG_D=0x10\n'
    assert kr.parse_config(text) == {"A": "y", "B": "n", "C": '"x y"', "D": "0x10"}


def test_digests_follow_the_content_not_the_name() -> None:
    a = kr.Recipe("pv", "/src/l.tar.xz", patches=("/p/1.patch",), config="tinyconfig")
    files = {"/p/1.patch": "aa"}
    d = kr.recipe_digest(a, "sha256:1", files)
    assert kr.recipe_digest(kr.Recipe("other-name", "/src/l.tar.xz", patches=("/p/1.patch",), config="tinyconfig"), "sha256:1", files) == d
    assert kr.recipe_digest(a, "sha256:2", files) != d  # another source
    assert kr.recipe_digest(a, "sha256:1", {"/p/1.patch": "bb"}) != d  # the patch changed under the same name
    assert kr.recipe_digest(kr.Recipe("pv", "/src/l.tar.xz", config="tinyconfig"), "sha256:1", {}) != d
    assert kr.recipe_digest(a, "sha256:1", files) != kr.recipe_digest(
        kr.Recipe("pv", "/src/l.tar.xz", patches=("/p/1.patch",), config="tinyconfig", set=(("SMP", "n"),)), "sha256:1", files)
    b = kr.build_digest("sha256:1", ["aa"], "CONFIG_A=y\n")
    assert b == kr.build_digest("sha256:1", ["aa"], "CONFIG_A=y\n")
    assert b != kr.build_digest("sha256:1", ["aa"], "CONFIG_A=n\n") and b != kr.build_digest("sha256:1", [], "CONFIG_A=y\n")


def test_the_source_digest_of_a_git_tree_is_its_tree_id_at_the_ref(tmp_path: Path) -> None:
    tree = tmp_path / "linux"
    tree.mkdir()
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tree / "Makefile").write_text("one\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "1"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    at_v1 = kb.source_digest(kr.Recipe("t", str(tree), ref="v1"))
    (tree / "Makefile").write_text("two\n")
    assert kb.source_digest(kr.Recipe("t", str(tree), ref="v1")) == at_v1  # the ref, not the work tree
    assert kb.source_digest(kr.Recipe("t", str(tree))) != at_v1  # no ref: the tree as it is, uncommitted change included


def test_failed_patch_output_names_the_files() -> None:
    out = ("patching file kernel/locking/qspinlock.c\nHunk #1 FAILED at 10.\n1 out of 2 hunks FAILED -- saving rejects to file "
           "kernel/locking/qspinlock.c.rej\npatching file include/x.h\n")
    assert kb.failed_files(out) == "kernel/locking/qspinlock.c (1 out of 2 hunks FAILED)"
    assert kb.failed_files("patching file a.c\nReversed (or previously applied) patch detected!  Skipping patch.\n"
                           "1 out of 1 hunk ignored -- saving rejects to file a.c.rej\n") == "a.c (already applied)"
    missing = ("can't find file to patch at input line 3\nPerhaps you used the wrong -p or --strip option?\nThe text leading up to this was:\n"
               "--------------------------\n|--- a/kernel/locking/qspinlock.c\n|+++ b/kernel/locking/qspinlock.c\n--------------------------\n"
               "No file to patch.  Skipping patch.\n1 out of 1 hunk ignored\n")  # GNU patch 2.7's words
    assert kb.failed_files(missing) == "kernel/locking/qspinlock.c (not in the tree)"


# ------------------------------------------------------------------------------------------ bad recipes


@pytest.mark.parametrize(
    ("kernels", "message"),
    [
        ("pv: {build: {source: /nonexistent/linux.tar.xz}}", r"guest_kernels\.pv\.build\.source: /nonexistent/linux\.tar\.xz does not exist"),
        ("pv: {build: {source: /nonexistent/tree}}", r"guest_kernels\.pv\.build\.source: /nonexistent/tree is not a source tree"),
        ("pv: {build: {source: linux-source, patches: [missing.patch]}}", r"guest_kernels\.pv\.build\.patches\[0\]: .*missing\.patch does not exist"),
        ("pv: {build: {source: linux-source, config: lab.config}}", r"guest_kernels\.pv\.build\.config: .*lab\.config does not exist"),
        ("pv: {build: {source: linux-source, fragments: [/nonexistent/x.config]}}", r"guest_kernels\.pv\.build\.fragments\[0\]: /nonexistent/x\.config does not exist"),
        ("pv: {build: {source: linux-source, compiler: clang}}", r"guest_kernels\.pv\.build: unknown key 'compiler'"),
        ("pv: {build: {source: linux-source}, initrd: /i}", r"guest_kernels\.pv: unknown key 'initrd'"),
        ("pv: {build: {config: defconfig}}", r"guest_kernels\.pv\.build: 'source' is required but missing"),
        ("pv: {build: {source: linux-source, set: {PARAVIRT_SPINLOCKS: [y]}}}", r"guest_kernels\.pv\.build\.set\.PARAVIRT_SPINLOCKS: \['y'\] is not"),
        ("pv: {build: {source: linux-source, set: {PARAVIRT_SPINLOCKS: {a: 1}}}}", r"guest_kernels\.pv\.build\.set\.PARAVIRT_SPINLOCKS: .* is not"),
        ("pv: {build: {source: linux-source, set: {PARAVIRT_SPINLOCKS: 'a\"b'}}}", r"guest_kernels\.pv\.build\.set\.PARAVIRT_SPINLOCKS: 'a\"b' is not y, n, m"),
        ("pv: {build: {source: linux-source, set: {lower_case: y}}}", r"guest_kernels\.pv\.build\.set"),
        ("pv: {build: {source: linux-source, config: 'make me'}}", r"guest_kernels\.pv\.build\.config: 'make me' is neither a make target"),
        ("pv: {build: {source: linux-source, ref: v6.1}}", r"guest_kernels\.pv\.build\.ref: a ref names a commit of a git tree"),
        ("pv: {build: {source: linux-source}, kernel: /boot/vmlinuz}", r"guest_kernels\.pv"),
    ],
)
def test_bad_recipes_are_one_line_naming_the_file_and_the_key(tmp_path: Path, kernels: str, message: str) -> None:
    path = matrix(tmp_path, f"guest_kernels:\n  {kernels}\n")
    with pytest.raises(MatrixError, match=message) as caught:
        load(path)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("env", ["container", "host"])
def test_a_container_or_host_cell_with_a_recipe_kernel_is_refused_at_plan_time(tmp_path: Path, env: str) -> None:
    """Neither boots a kernel: a recipe there would be built (tens of minutes) for cells that never boot it."""
    path = tmp_path / "m.yml"
    path.write_text("campaign: c\nworkload: {name: lockbench, params: {}}\nrepetitions: 1\n"
                    "guest_kernels:\n  pv: {build: {source: linux-source, config: tinyconfig}}\n"
                    f"axes: {{env: [kvm, {env}], guest_kernel: [pv]}}\n")
    with pytest.raises(MatrixError, match=f"guest_kernel 'pv' is a kernel recipe: env {env} runs the host's kernel") as caught:
        plan(load(path), {"h": 2})
    assert "\n" not in str(caught.value)


def test_the_cli_says_one_line_and_exits_2_for_a_bad_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = matrix(tmp_path, "guest_kernels:\n  pv: {build: {source: linux-source, set: {PARAVIRT_SPINLOCKS: [1]}}}\n")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "guest_kernels.pv.build.set.PARAVIRT_SPINLOCKS" in err


# ------------------------------------------------------------------------------------------ cache and records


def fake_build(root: Path, recipe: kr.Recipe) -> Path:
    """A cache entry as kernelbuild._build leaves it (no compiler run)."""
    digest = "b" * 16
    d = kb.cache_root(root) / digest
    d.mkdir(parents=True)
    (d / "bzImage").write_bytes(b"kernel")
    (d / "config").write_text("CONFIG_A=y\n")
    (d / "kernel.json").write_text(json.dumps({"digest": digest, "release": "6.1.0", "config_digest": kr.config_digest("CONFIG_A=y\n"),
                                               "recipe": recipe.to_json()}))
    (kb.cache_root(root) / "recipes").mkdir()
    (kb.cache_root(root) / "recipes" / kb.recipe_digest(recipe)).write_text(digest + "\n")
    return d


def test_a_cached_build_is_found_by_recipe_content_and_nothing_is_built(tmp_path: Path) -> None:
    tarball = tmp_path / "linux.tar.xz"
    tarball.write_bytes(b"source")
    recipe = kr.Recipe("pv", str(tarball), config="tinyconfig")
    assert kb.lookup(recipe, tmp_path) is None
    d = fake_build(tmp_path, recipe)
    lines = []
    built = kb.ensure_built(recipe, tmp_path, progress=lines.append)  # would fail (not a real tarball) if it built
    assert built.dir == d and built.release == "6.1.0" and lines == []
    same_content = kr.Recipe("renamed", str(tarball), config="tinyconfig")
    assert kb.lookup(same_content, tmp_path) == built
    spec = {"build": {"source": str(tarball), "config": "tinyconfig"}}
    assert kb.kernel_of({"guest_kernel": "pv", "guest_kernel_spec": spec}, tmp_path) == d / "bzImage"
    out = kb.prepare_kernels([{"guest_kernel": "pv", "guest_kernel_spec": spec}], tmp_path / "dataset", cache=tmp_path)
    assert out == {"pv": {"build": "b" * 16, "release": "6.1.0", "config_digest": kr.config_digest("CONFIG_A=y\n")}}
    assert (tmp_path / "dataset/kernels" / f"{'b' * 16}.config").read_text() == "CONFIG_A=y\n"
    assert "cached (build bbbbbbbbbbbbbbbb, 6.1.0)" in kb.plan_lines({"pv": recipe}, tmp_path)[0]
    tarball.write_bytes(b"another source")  # the same path, another content: not built yet
    assert kb.lookup(recipe, tmp_path) is None
    assert "to build, about" in kb.plan_lines({"pv": recipe}, tmp_path, cores=2)[0]


def test_the_trial_columns_come_from_what_the_guest_said() -> None:
    facts = {"kernel_release": "6.1.0-runner", "kernel_build": "pv abcd 6.1.0-runner cfgd",
             "pvspin_line": "PV spinlocks disabled, single CPU."}
    assert kf.trial_columns(facts, "nopv") == {"kernel_recipe": "nopv", "kernel_build": "abcd", "kernel_release": "6.1.0-runner",
                                               "kernel_config_digest": "cfgd", "guest_uname": "6.1.0-runner",
                                               "guest_pvspin": "PV spinlocks disabled, single CPU."}
    plain = kf.trial_columns({"kernel_release": "6.1.0-27-amd64", "kernel_build": "", "pvspin_line": ""}, "default")
    assert plain == {"kernel_recipe": None, "kernel_build": None, "kernel_release": None, "kernel_config_digest": None,
                     "guest_uname": "6.1.0-27-amd64", "guest_pvspin": None}


def test_the_facts_script_reads_the_pv_spinlock_line_from_dmesg(tmp_path: Path) -> None:
    from runner.execution.boots import parse_guest_facts

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dmesg").write_text("#!/bin/sh\necho '[    0.1] kvm-guest: PV spinlocks enabled'\necho '[ 0.2] other'\n")
    (bin_dir / "dmesg").chmod(0o755)
    out = subprocess.run(["sh", "-c", kf.FACTS_LINES + "exit 0"], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout
    assert parse_guest_facts(out)["pvspin_line"] == "PV spinlocks enabled"
    (bin_dir / "dmesg").write_text("#!/bin/sh\necho '[    0.1] xen: PV spinlocks disabled'\n")
    out = subprocess.run(["sh", "-c", kf.FACTS_LINES], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout
    assert parse_guest_facts(out)["pvspin_line"] == "xen: PV spinlocks disabled"


@pytest.mark.parametrize(("symbols", "expect"), [
    ("ffffffff81000000 T _stext\nffffffff81c5f6d0 T native_queued_spin_lock_slowpath\n", kf.NO_PV_SPINLOCK_CODE),
    ("ffffffff81c5f6d0 T native_queued_spin_lock_slowpath\nffffffff81c5fa30 T __pv_queued_spin_lock_slowpath\n", ""),
    (None, ""),  # no symbol table (a tinyconfig kernel has no KALLSYMS): nothing is claimed
])
def test_a_kernel_without_pv_spinlock_code_says_so_when_it_printed_no_line(tmp_path: Path, symbols: str | None,
                                                                            expect: str) -> None:
    """A kernel built without PARAVIRT_SPINLOCKS (the nopv recipe) prints no PV spinlock line; its symbol
    table tells, so the guest says it has no PV spinlock code rather than nothing."""
    from runner.execution.boots import parse_guest_facts

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dmesg").write_text("#!/bin/sh\necho '[    0.1] other'\n")
    (bin_dir / "dmesg").chmod(0o755)
    kallsyms = tmp_path / "kallsyms"
    if symbols is not None:
        kallsyms.write_text(symbols)
    script = kf.FACTS_LINES.replace("/proc/kallsyms", str(kallsyms))
    out = subprocess.run(["sh", "-c", script + "exit 0"], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout
    assert parse_guest_facts(out).get("pvspin_line", "") == expect.replace("/proc/kallsyms", str(kallsyms))


def test_plan_says_which_kernels_will_be_built_and_what_the_runner_adds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))  # an empty cache: both are to build
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps at the terminal width
    tarball = tmp_path / "linux.tar.xz"
    tarball.write_bytes(b"source")
    path = matrix(tmp_path, f"guest_kernels:\n  pv: {{build: {{source: {tarball}, config: tinyconfig}}}}\n"
                            f"  nopv: {{build: {{source: {tarball}, config: defconfig, set: {{PARAVIRT_SPINLOCKS: n}}}}}}\n",
                  "axes: {guest_kernel: [pv, nopv]}\n")
    assert main(["plan", str(path), "--show", "0"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert f"kernel pv: {tarball} tinyconfig: to build, about" in out and f"kernel nopv: {tarball} defconfig: to build, about" in out
    assert "added for kvm/xen guests (=y):" in out and "XEN_PVH" in out
