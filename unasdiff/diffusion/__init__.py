from .schedule import DiffusionSchedule

__all__ = ["DiffusionSchedule"]
