"""``kiam agent``: the per-node metadata proxy (never imports kiam.server, aws or k8s).

main.py      run_agent(): process wiring, start-up and shutdown order
app.py       the HTTP routes (docs/architecture.md) behind one dispatcher
paths.py     path normalisation, routing, the --allow-route-regexp allow-list
imdsv2.py    IMDSv2 session tokens issued and checked by the agent
proxy.py     allow-listed paths forwarded to the real IMDS with the agent's own token
client.py    gRPC client to the kiam servers; grpc errors -> errors.py
errors.py    the agent's exceptions and their HTTP statuses
iptables.py  the DNAT rule for 169.254.169.254:80
metrics.py   Prometheus metrics with Kiam's names
"""
