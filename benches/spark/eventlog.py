"""Sums a Spark event log (spark.eventLog.enabled) into what a sizing plan needs: tasks,
input bytes, shuffle bytes written and read, spill, and the largest per-task peak execution
memory. Prints one line of key=value.

Usage: eventlog.py EVENT_LOG_DIR
"""
import glob
import json
import os
import sys

tasks = stages = 0
totals = {"input": 0, "shuffle_write": 0, "shuffle_read": 0, "spill_mem": 0, "spill_disk": 0}
peak_task = 0
# Spark 4 writes rolling logs: a folder per application holding events_N_* files.
for path in glob.glob(f"{sys.argv[1]}/**", recursive=True):
    if not os.path.isfile(path) or os.path.basename(path).startswith("appstatus"):
        continue
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            kind = e.get("Event")
            if kind == "SparkListenerStageCompleted":
                stages += 1
            if kind != "SparkListenerTaskEnd":
                continue
            m = e.get("Task Metrics") or {}
            tasks += 1
            totals["input"] += (m.get("Input Metrics") or {}).get("Bytes Read", 0)
            w = m.get("Shuffle Write Metrics") or {}
            totals["shuffle_write"] += w.get("Shuffle Bytes Written", 0)
            r = m.get("Shuffle Read Metrics") or {}
            totals["shuffle_read"] += r.get("Remote Bytes Read", 0) + r.get("Local Bytes Read", 0)
            totals["spill_mem"] += m.get("Memory Bytes Spilled", 0)
            totals["spill_disk"] += m.get("Disk Bytes Spilled", 0)
            peak_task = max(peak_task, m.get("Peak Execution Memory", 0))
mib = lambda b: f"{b / 2**20:.0f}MiB"
print(
    f"stages={stages} tasks={tasks} input={mib(totals['input'])} "
    f"shuffle_write={mib(totals['shuffle_write'])} shuffle_read={mib(totals['shuffle_read'])} "
    f"spill_disk={mib(totals['spill_disk'])} peak_task_exec_mem={mib(peak_task)}"
)
