"""Cluster mode: the embedded server's interfaces backed by real engines (docs/cluster.md).

Signal nodes call SFU nodes over gRPC (`sfu_server`, `sfu_client`); nodes register in etcd,
room state lives in Redis and notifications cross nodes over NATS. Each engine sits behind
a small Protocol whose in-process implementation is what `aiosfu serve` uses.
"""
