"""runner: scalability campaigns for operating systems on bare hosts, containers and VMs.

The package follows the flow of a campaign, one stage per subpackage:

    matrix/      the matrix file: schema, validation, expansion into cells    (pure)
    trials.py    cells x repetitions -> trials with content-derived ids      (pure)
    provision/   hosts, inventory, Ansible, guests, containers               (outside world)
    execution/   running trials on hosts with Dask, timeouts, retries         (outside world)
    workloads/   workload plugins: what to run and how to parse its output
    records/     the Parquet dataset: schema, atomic writes, resume           (outside world)
    analysis/    metrics, scaling-law fits, collapse, fairness, reports       (pure + plots)
    cli/         one module per subcommand
"""

__version__ = "0.1.0"
