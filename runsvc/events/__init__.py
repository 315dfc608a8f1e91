"""The run-event subsystem: the bus (fan-out, lag, TTL), append (seqs and group commit), the stream
(catch-up then live, exactly once) and the runs feed."""

from .append import EventLog, EventLogStatistics
from .bus import BusStatistics, DirectSink, RunEventBus, Subscription, SubscriptionStatistics
from .feed import FeedWatcher, RunFeed
from .stream import stream_run_events

__all__ = [
    "DirectSink",
    "BusStatistics",
    "EventLog",
    "EventLogStatistics",
    "FeedWatcher",
    "RunEventBus",
    "RunFeed",
    "Subscription",
    "SubscriptionStatistics",
    "stream_run_events",
]
