"""Workloads: what requests arrive when, how long they are, and which SLO tier each one has.

Reading guide:
- ``formats``     the trace formats and ``detect_format`` (from a file's first line);
- ``reader``      ``read_trace``: format dispatch and the file's sha256;
- ``csv_reader``  streaming reader for azure, vidur, burstgpt and lengths-only CSV files;
- ``mooncake``    streaming reader for Mooncake JSON lines;
- ``timestamps``  fast, exact parsing of Azure's wall-clock timestamps;
- ``fields``      per-field checks whose ``InputError`` says what is allowed;
- ``trace``       ``TraceData``: one file as numpy columns;
- ``lengths``     ``LengthSpec``: fixed, uniform, zipf or trace-resampled lengths;
- ``arrivals``    Poisson / gamma arrival processes (vllm bench serve's burstiness);
- ``transforms``  window, re-time, tile and cut a recorded trace;
- ``tiering``     tier mix draws and per-request TTFT/TPOT SLOs;
- ``spec``        ``WorkloadSpec``: the flags, validated, with their defaults and meaning;
- ``workload``    ``Workload``: the columnar, arrival-sorted requests a simulation consumes;
- ``build``       ``build_workload`` and ``poisson_lengths_workload`` (goodput bisection).

Everything random takes an explicit seed; the same inputs and seed give identical arrays.
"""

from polyserve.workload.arrivals import arrival_times
from polyserve.workload.build import build_workload, poisson_lengths_workload
from polyserve.workload.formats import FORMATS, detect_format
from polyserve.workload.lengths import LengthSpec
from polyserve.workload.reader import read_trace
from polyserve.workload.spec import WorkloadSpec
from polyserve.workload.trace import TraceData
from polyserve.workload.workload import Workload

__all__ = [
    "FORMATS",
    "LengthSpec",
    "TraceData",
    "Workload",
    "WorkloadSpec",
    "arrival_times",
    "build_workload",
    "detect_format",
    "poisson_lengths_workload",
    "read_trace",
]
