"""Broker counters for GET_BROKER_RUNTIME_INFO (msgPutTotalTodayNow and friends)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class BrokerStats:
    put_total: int = 0
    get_total: int = 0
    put_total_yesterday_morning: int = 0
    get_total_yesterday_morning: int = 0
    put_total_today_morning: int = 0
    get_total_today_morning: int = 0
    boot_timestamp_ms: int = 0

    def on_put(self, n: int = 1) -> None:
        self.put_total += n

    def on_get(self, n: int) -> None:
        self.get_total += n

    def roll_day(self) -> None:
        """At midnight: today becomes yesterday."""
        self.put_total_yesterday_morning = self.put_total_today_morning
        self.get_total_yesterday_morning = self.get_total_today_morning
        self.put_total_today_morning = self.put_total
        self.get_total_today_morning = self.get_total
