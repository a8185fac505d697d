"""swarm-drone: the agent on each build host (register, heartbeat, lease, build, sync, report)."""
