"""Clients' personal state: its file format (`personal`) and where it is kept (`store`)."""
