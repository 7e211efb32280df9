"""Simulated fleets for `fleetstate simulate` and the benchmarks (`python -m bench`).

- `options`: what to simulate, each device's part (no extra dependencies);
- `provision`: creating or registering the devices through the service's APIs;
- `device`, `http_device`: one device's behaviour over MQTT (aiomqtt) or the device HTTP API;
- `fleet`: a worker process playing many devices, reporting counts over a queue;
- `supervisor`: the parent's side of the worker processes;
- `console`, `runner`: rich progress, the summary, and the command itself.

Everything but `options` needs the `simulate` extra (aiomqtt and rich).
"""

EXTRA_HINT = "pip install 'fleetstate[simulate]'  (adds aiomqtt and rich)"
