"""Thin asyncio shells around the pure core: comms, servers, executors."""
