"""Where commands run: the Host contract (base) and its implementations: this machine (local), SSH hosts and
guests behind their hypervisor host (ssh), containers on a host (container). The ground floor of the runner:
it imports nothing of the runner but `runner.errors`."""
