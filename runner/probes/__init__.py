"""Probes: per-trial telemetry collectors (perf counters, lock statistics, KVM exits, run delay, clock
frequency) that run on a Host around the workload. See runner.probes.base for the contract and
docs/probes.md for the built-ins and what each costs. The layer of runner.workloads: it imports the Host
contract (runner.hosts), runner.errors and the Metric record, nothing of execution or the CLI."""
