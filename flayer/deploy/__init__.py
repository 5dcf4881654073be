"""Deployment on real machines with Flower's SuperLink and SuperNodes: process lifecycle,
TLS certificates and SuperNode keys, and a whole deployment on one machine
(`python -m flayer.deploy local`)."""
