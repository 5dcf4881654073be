"""The federated protocol: the round loop, a method's client and server contract, replies,
uploads, aggregation, and which node serves which client."""
