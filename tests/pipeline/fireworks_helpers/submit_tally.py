"""Add a workflow of N independent tally jobs to an embedded LaunchPad (a fresh process).

python submit_tally.py LAUNCHPAD_JSON STORE_FOLDER TALLY_FILE N
"""

from __future__ import annotations

import sys

from jobflow import Flow
from tally_jobs import tally

from pipeline.launchpad import LaunchPadLocation, open_launchpad
from pipeline.store import ResultsStore

launchpad_file, store_folder, tally_file, count = sys.argv[1:5]
flow = Flow([tally(i, tally_file) for i in range(int(count))], name="tally")
with open_launchpad(LaunchPadLocation.parse(f"embedded:{launchpad_file}")) as launchpad:
    from jobflow.managers.fireworks import flow_to_workflow

    results = ResultsStore.embedded(store_folder).connect()  # as `campaign submit` does
    launchpad.add_wf(flow_to_workflow(flow, store=results.jobs))
