"""Several uipd nodes as one service: the broker every publish goes through (in memory for one
node, Redis for a cluster), source leases, and the cluster view in /api/stats."""
