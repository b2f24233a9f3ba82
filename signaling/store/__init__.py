"""Where shared state lives: in this process (default) or in Redis (several nodes)."""

from signaling.store.base import Slot, Store, StoreBusy, StoreError
from signaling.store.memory import MemoryStore

__all__ = ["MemoryStore", "Slot", "Store", "StoreBusy", "StoreError"]
