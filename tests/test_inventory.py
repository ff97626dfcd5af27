"""Inventory loading through Ansible's own loader, on inventories written in tmp_path."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from runner.errors import UnknownNameError, UsageError
from runner.hosts.local import LocalHost
from runner.hosts.ssh import HostSpec, SSHHost
from runner.provision.inventory import connect, known_hosts_from_ssh_args, load_inventory

REPO = Path(__file__).resolve().parent.parent

LAB = """\
all:
  children:
    local:
      hosts:
        localhost:
          ansible_connection: local
    lab:
      children:
        numa:
          hosts:
            n1:
              ansible_host: "{{ inventory_hostname }}.lab.example"
            n2:
        xen:
          hosts:
            x1:
              ansible_ssh_host: 192.0.2.7
              ansible_ssh_port: 2200
              ansible_ssh_user: xenadm
    guests:
      hosts:
        vm1:
          ansible_connection: community.libvirt.libvirt_qemu
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "hosts.yml"


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    return write(tmp_path, {
        "hosts.yml": LAB,
        "group_vars/lab.yml": "ansible_user: bench\nansible_ssh_private_key_file: ~/.ssh/lab_key\n"
                              "ansible_ssh_common_args: -o StrictHostKeyChecking=yes "
                              "-o UserKnownHostsFile=/etc/lab/known_hosts\n",
        "host_vars/n2.yml": "ansible_port: 2222\nansible_host: 192.0.2.2\nansible_ssh_timeout: 3\n",
    })


def test_group_resolves_with_group_vars_host_vars_and_templates(lab):
    n1, n2, x1 = load_inventory(lab).resolve("lab")
    home = Path("~").expanduser()
    assert n1 == HostSpec("n1", "n1.lab.example", 22, "bench", home / ".ssh/lab_key",
                          Path("/etc/lab/known_hosts"), 10.0, local=False)
    assert (n2.address, n2.port, n2.user, n2.connect_timeout) == ("192.0.2.2", 2222, "bench", 3.0)
    assert (x1.address, x1.port, x1.user) == ("192.0.2.7", 2200, "xenadm")  # ansible_ssh_* aliases


def test_host_name_and_nested_group_resolve(lab):
    inv = load_inventory(lab)
    assert [s.name for s in inv.resolve("numa")] == ["n1", "n2"]
    assert [s.name for s in inv.resolve("n2")] == ["n2"]
    assert [s.name for s in inv.resolve("lab")] == ["n1", "n2", "x1"]


def test_local_hosts(lab, tmp_path):
    inv = load_inventory(lab)
    (local,) = inv.resolve("local")
    assert local.local and local.name == "localhost"
    assert isinstance(connect(local), LocalHost)
    other = write(tmp_path / "other", {"hosts.yml": "all:\n  hosts:\n    box:\n    localhost:\n"})
    box, localhost = load_inventory(other).resolve("all")
    assert not box.local and box.address == "box" and box.user == getpass.getuser()
    assert localhost.local  # named localhost without ansible_host
    implicit = load_inventory(other).resolve("localhost")
    assert implicit[0].local


def test_remote_host_connects_over_ssh_lazily(lab):
    (n1,) = load_inventory(lab).resolve("n1")
    host = connect(n1)
    assert isinstance(host, SSHHost) and host.name == "n1"
    host.close()  # nothing was opened; closing is still fine


def test_unknown_name_lists_known_ones(lab):
    with pytest.raises(UnknownNameError) as err:
        load_inventory(lab).resolve("nmua")
    message = str(err.value)
    assert message == (f"no host or group 'nmua' in {lab}; known: all, guests, lab, local, numa, xen, "
                       "localhost, n1, n2, vm1, x1")


def test_unsupported_connection_fails_only_when_used(lab):
    inv = load_inventory(lab)
    inv.resolve("lab")
    with pytest.raises(UsageError, match=r"host vm1: ansible_connection 'community.libvirt.libvirt_qemu' is not"):
        inv.resolve("guests")


def test_bad_values_name_file_host_and_key(tmp_path):
    bad_port = write(tmp_path / "a", {"hosts.yml": "all:\n  hosts:\n    h1:\n      ansible_port: twenty\n"})
    with pytest.raises(UsageError, match=r"hosts.yml: host h1: ansible_port 'twenty' is not an integer"):
        load_inventory(bad_port)
    undefined = write(tmp_path / "b", {"hosts.yml": "all:\n  hosts:\n    h1:\n      ansible_host: '{{ nope }}'\n"})
    with pytest.raises(UsageError, match=r"hosts.yml: host h1: ansible_host: .*nope"):
        load_inventory(undefined)


def test_missing_broken_and_empty_files(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_inventory(tmp_path / "nothing.yml")
    broken = write(tmp_path / "c", {"hosts.yml": "all:\n  hosts: [\n"})
    with pytest.raises(UsageError, match=r"hosts.yml: not valid YAML"):
        load_inventory(broken)
    empty = write(tmp_path / "d", {"hosts.yml": "all:\n  children: {}\n"})
    with pytest.raises(UsageError, match="no hosts"):
        load_inventory(empty)


def test_ini_inventory_works_too(tmp_path):
    ini = tmp_path / "hosts.ini"
    ini.write_text("[lab]\nn1 ansible_host=192.0.2.1 ansible_user=bench\n")
    (n1,) = load_inventory(ini).resolve("lab")
    assert (n1.address, n1.user, n1.port) == ("192.0.2.1", "bench", 22)


@pytest.mark.parametrize(("args", "expected"), [
    ("-o UserKnownHostsFile=/a/kh -o StrictHostKeyChecking=yes", "/a/kh"),
    ("-oUserKnownHostsFile=/b/kh", "/b/kh"),
    ("-o 'UserKnownHostsFile /c/kh /d/kh'", "/c/kh"),
    ("-o userknownhostsfile=/e/kh", "/e/kh"),
    ("-o StrictHostKeyChecking=yes", None),
    ("", None),
    ("-o 'unbalanced", None),
])
def test_known_hosts_from_ssh_args(args, expected):
    assert known_hosts_from_ssh_args(args) == (Path(expected) if expected else None)


@pytest.mark.parametrize("source", ["inventory/hosts.yml", "inventory"])
def test_default_inventory_has_local_group(source):
    (spec,) = load_inventory(REPO / source).resolve("local")
    assert spec.name == "localhost" and spec.local


def test_directory_inventory_reads_every_file_and_vars(lab):
    inv = load_inventory(lab.parent)
    assert inv.resolve("n2")[0].port == 2222


# host_vars/ and group_vars/ beside an inventory file (or inside an inventory directory): Ansible escapes the bytes
# of a binary or non-UTF-8 file and ends in a traceback; the runner refuses it in one line naming the file.
BAD_VARS = [  # (id, file under the inventory's directory, its bytes, what the message says after the file's path)
    ("host_vars_binary", "host_vars/n2.yml", b"\x7fELF\x02\x01\x00", "a binary file, not a host_vars file"),
    ("group_vars_latin1", "group_vars/lab.yml", b"ansible_user: bench\nntp: caf\xe9\n",
     "line 2: not UTF-8 text (byte 0xe9); save the group_vars file as UTF-8"),
    ("group_vars_dir_latin1", "group_vars/numa/ntp", b"\xff", "line 1: not UTF-8 text (byte 0xff)"),
    ("all_json_binary", "group_vars/all.json", b'{"a": "\x00"}', "a binary file, not a group_vars file"),
    ("host_vars_no_extension", "host_vars/x1", b"ansible_port: [\n", "not valid YAML: "),
    ("host_vars_list", "host_vars/n1.yaml", b"- ansible_port: 22\n", "holds a list, not a mapping of variable names to values"),
    ("deep", "group_vars/all.yml", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply to be a group_vars file"),
]


@pytest.mark.parametrize("source", ["file", "directory"])
@pytest.mark.parametrize(("rel", "data", "expect"), [pytest.param(*c[1:], id=c[0]) for c in BAD_VARS])
def test_bad_vars_file_is_named(source: str, rel: str, data: bytes, expect: str, lab: Path) -> None:
    (lab.parent / rel).parent.mkdir(parents=True, exist_ok=True)
    (lab.parent / rel).write_bytes(data)
    with pytest.raises(UsageError) as err:
        load_inventory(lab if source == "file" else lab.parent)
    assert str(err.value).startswith(f"{lab.parent / rel}: {expect}"), err.value


def test_vars_files_ansible_does_not_read_are_not_checked(lab: Path) -> None:
    """Files for hosts or groups the inventory does not have, hidden and backup files, other extensions: Ansible
    never reads them, so neither does the check; Ansible's tags (!vault, !unsafe) are fine."""
    for rel in ("host_vars/stranger.yml", "group_vars/.hidden.yml", "group_vars/lab.yml~", "host_vars/n2.txt",
                "group_vars/numa/notes.md"):
        (lab.parent / rel).parent.mkdir(parents=True, exist_ok=True)
        (lab.parent / rel).write_bytes(b"\x00\xff")
    (lab.parent / "group_vars/numa/secrets.yml").write_text(
        "ansible_become_password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6132\nmotd: !unsafe '{{ not templated }}'\n")
    assert load_inventory(lab).resolve("n2")[0].port == 2222


def test_vars_file_ansible_cannot_read_is_one_line(lab: Path) -> None:
    """A file encrypted whole with ansible-vault is UTF-8 text; without the vault password Ansible cannot read
    it: one line naming the inventory and the host, not a traceback."""
    (lab.parent / "host_vars/n2.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n61326364\n")
    with pytest.raises(UsageError, match=r"hosts.yml: host n2: Ansible cannot read its variables: .*vault"):
        load_inventory(lab)


def test_vars_beside_the_real_file_of_a_symlinked_inventory(lab: Path, tmp_path: Path) -> None:
    """Ansible reads the host_vars/ beside the file a symlinked inventory points to, not beside the link."""
    link = tmp_path / "elsewhere" / "hosts.yml"
    link.parent.mkdir()
    link.symlink_to(lab)
    (link.parent / "host_vars").mkdir()
    (link.parent / "host_vars" / "n2.yml").write_bytes(b"\x00")  # beside the link: never read
    assert load_inventory(link).resolve("n2")[0].port == 2222
    (lab.parent / "host_vars" / "n2.yml").write_bytes(b"ansible_port: caf\xe9\n")
    with pytest.raises(UsageError, match=rf"^{lab.parent / 'host_vars' / 'n2.yml'}: line 1: not UTF-8 text"):
        load_inventory(link)


def test_what_a_host_runs_and_how_fast(tmp_path):
    """runner_envs, runner_boot_s and runner_trial_s (runner.execution.placement), from group and host vars."""
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    vmhosts:\n      vars: {runner_trial_s: 20}\n      hosts:\n"
        "        kvm1: {runner_envs: [host, kvm, kvm], runner_boot_s: {kvm: 30}}\n"
        "        xen1: {runner_envs: 'xen-pv, xen-hvm', runner_boot_s: {xen-pv: 15, xen-hvm: 480.5}, runner_trial_s: 35}\n"
        "        any1: {}\n")
    kvm1, xen1, any1 = load_inventory(path).resolve("vmhosts")
    assert (kvm1.envs, kvm1.boot_s, kvm1.trial_s) == (("host", "kvm"), (("kvm", 30.0),), 20.0)
    assert (xen1.envs, xen1.boot_s, xen1.trial_s) == (("xen-pv", "xen-hvm"), (("xen-hvm", 480.5), ("xen-pv", 15.0)), 35.0)
    assert (any1.envs, any1.boot_s) == (None, ())
    for bad, says in (("runner_envs: {a: 1}", "runner_envs {'a': 1} is not a list of environment names"),
                      ("runner_boot_s: [1]", "runner_boot_s [1] is not a mapping of environment to seconds"),
                      ("runner_boot_s: {kvm: -1}", "runner_boot_s.kvm -1 is not a number of seconds >= 0"),
                      ("runner_trial_s: soon", "runner_trial_s 'soon' is not a number of seconds >= 0")):
        path.write_text(f"all:\n  hosts:\n    h1: {{{bad}}}\n")
        with pytest.raises(UsageError, match="host h1: " + says.replace("[", r"\[").replace("{", r"\{")):
            load_inventory(path).resolve("h1")
