"""Test infrastructure, not part of the tool a lab runs: the namespace test bed (`testbed`: SSH hosts and
hypervisor hosts as network namespaces) and hypervisor host VMs (`vmhost`: a KVM or Xen host as a QEMU
virtual machine with emulated SVM). Used by tests/ and bench/; nothing under runner/ imports it."""
