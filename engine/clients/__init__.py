"""Clients of the engine's services that run on other machines (engine.clients.epaper: seed 004's picture frame on a
Raspberry Pi). They import nothing else from engine (no torch, no GL): a clone of the repository and a few small
packages are all a Pi needs."""
