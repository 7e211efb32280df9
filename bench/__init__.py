"""Benchmarks of fleetstate with a simulated fleet: `python -m bench --devices N` (see
docs/benchmarks.md). `run` drives one run; `service` starts the processes under test; `scenarios`
and `ceiling` measure; `load` is the lean load generator run as its own process; `report` turns a
run into targets and a markdown table. Results go to bench/results/."""
