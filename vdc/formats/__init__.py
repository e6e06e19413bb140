"""Readers and writers of the files stages exchange (teacher networks, expert trajectories, EDC
statistics). A stage imports these, never another stage's module, so that editing one stage's code
reruns only that stage's jobs (vdc/fingerprint.py follows imports)."""
