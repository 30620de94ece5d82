"""Broker: wires the store, metadata managers, processors and periodic tasks together.

Everything hangs off the instance (no module state), so many brokers can share one
process and one event loop (BrokerContainer, in-process cluster tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable

from ledgermq.broker.client_manager import ClientManager, ConsumerGroupInfo
from ledgermq.broker.config import REGISTER_PERIOD_MIN_MS, BrokerConfig
from ledgermq.broker.config_file import JsonConfigFile
from ledgermq.broker.consumer_offsets import ConsumerOffsetManager
from ledgermq.broker.delay import recovery_tags_code
from ledgermq.broker.long_polling import PullHoldService
from ledgermq.broker.mq_lock import RebalanceLockManager
from ledgermq.broker.namesrv_registration import BrokerIdentity, NamesrvRegistrar
from ledgermq.broker.pop.service import PopService
from ledgermq.broker.processors.pop import register_pop_processors
from ledgermq.broker.processors.registry import register_processors
from ledgermq.broker.putter import MessagePutter
from ledgermq.broker.replicated_metadata import ReplicatedMetadata
from ledgermq.broker.schedule import ScheduleService
from ledgermq.broker.slave_sync import DEFAULT_INTERVAL_S as DEFAULT_SYNC_INTERVAL_S
from ledgermq.broker.slave_sync import SlaveSync
from ledgermq.broker.stats import BrokerStats
from ledgermq.broker.store_port import StorePort
from ledgermq.broker.subscription_group import SubscriptionGroupManager
from ledgermq.broker.topic_config import TopicConfigManager
from ledgermq.broker.topics import SCHEDULE_TOPIC
from ledgermq.broker.transaction.service import TransactionService, TransactionSettings
from ledgermq.common.config import ConfigError
from ledgermq.common.route_data import DataVersion
from ledgermq.dledger.core import Role
from ledgermq.dledger.member import Member, MemberConfig
from ledgermq.dledger.server import DLedgerServer
from ledgermq.remoting.client import RemotingClient
from ledgermq.remoting.codec import RemotingCommand
from ledgermq.remoting.codes import RequestCode
from ledgermq.remoting.connection import Dispatcher, RemotingConnection
from ledgermq.remoting.server import RemotingServer
from ledgermq.storage.disk import Disk, OsDisk
from ledgermq.store.dledger_commitlog import DLedgerMessageStore
from ledgermq.store.message_store import MessageStore, StoreConfig

log = logging.getLogger(__name__)

_CHANNEL_SCAN_INTERVAL_S = 10.0
_DELAY_OFFSET_FLUSH_S = 10.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Broker:
    def __init__(
        self,
        config: BrokerConfig,
        *,
        disk: Disk | None = None,
        clock_ms: Callable[[], int] | None = None,
        host: str = "0.0.0.0",
        register_period_floor_ms: int = REGISTER_PERIOD_MIN_MS,
    ) -> None:
        """`register_period_floor_ms` lowers the 10 s floor of the NameServer
        registration period; only tests use it (the config file cannot)."""
        config.validate()
        self.config = config
        self.register_period_ms = config.register_period_ms(register_period_floor_ms)
        self.disk = disk or OsDisk()
        self.clock_ms = clock_ms or _wall_ms
        self._host = host
        self.ip1 = config.resolved_ip1()
        self.config_version = DataVersion()
        self.stats = BrokerStats()
        self._tasks: list[asyncio.Task[None]] = []
        self._register_wanted: asyncio.Event | None = None
        self._started = False
        self.master_addr: str | None = None
        for key in config.unsupported_keys_set():
            log.warning("broker config key '%s' is not supported yet and has no effect", key)

        cfg_dir = str(config.config_dir)
        levels = config.delay_levels_ms()
        # DLedger mode: the group elects the master; brokerId follows (0 while leading)
        self.dledger: DLedgerServer | None = None
        self.dledger_member: Member | None = None
        self._dledger_store: DLedgerMessageStore | None = None
        self._becoming_master: asyncio.Task[None] | None = None
        # offsets, topics and delay progress in the log (DLedger mode)
        self.metadata_log: ReplicatedMetadata | None = None
        self.broker_id = config.broker_id
        self._schedule_running = False  # delayed messages are delivered by masters only
        self._schedule_stopping: asyncio.Task[None] | None = None
        store_cls = MessageStore
        if config.enable_d_leger_commit_log:
            store_cls = DLedgerMessageStore
            self.broker_id = config.dledger_slave_id()  # a follower until elected
        store = store_cls(self._store_config(), self.disk, tags_code_of=recovery_tags_code(levels))
        if isinstance(store, DLedgerMessageStore):
            self._dledger_store = store
            store.on_writes_lost = self._dledger_writes_lost
        self.store = StorePort(store)
        self.topic_config = TopicConfigManager(
            config, self._file(cfg_dir, "topics.json"), self.clock_ms, self._topics_changed
        )
        self.consumer_offsets = ConsumerOffsetManager(self._file(cfg_dir, "consumerOffset.json"))
        self.subscription_groups = SubscriptionGroupManager(
            self._file(cfg_dir, "subscriptionGroup.json"),
            self.clock_ms,
            config.auto_create_subscription_group,
        )
        self.clients = ClientManager(self._consumer_ids_changed)
        self.locks = RebalanceLockManager(self.clock_ms, config.rebalance_lock_max_live_time)
        self.pull_hold = PullHoldService()
        self.putter = MessagePutter(self.store, levels, self.stats, self.clock_ms)
        self.schedule = ScheduleService(
            self.store, self.putter, levels, self._file(cfg_dir, "delayOffset.json"), self.clock_ms
        )
        self.transactions = TransactionService(
            store=self.store,
            putter=self.putter,
            clients=self.clients,
            offsets=self.consumer_offsets,
            topics=self.topic_config,
            settings=self._transaction_settings,
            commit_offset=self.commit_master_progress,
            store_host=lambda: self.store_host,
            broker_name=config.broker_name,
            clock_ms=self.clock_ms,
        )
        self.dispatcher = Dispatcher()
        register_processors(self, self.dispatcher)
        # POP consumption: checkpoints/acks in the revive topic, revived by the master
        self.pop = PopService(self)
        register_pop_processors(self, self.dispatcher)
        self.server = RemotingServer(
            self.dispatcher,
            host,
            config.listen_port,
            max_frame_size=max(16 * 1024 * 1024, config.max_message_size + 1024 * 1024),
            name=f"broker[{config.broker_name}]",
        )
        self.server.add_close_listener(self._connection_closed)
        self.outer_client = RemotingClient()
        self.registrar = NamesrvRegistrar(
            self.outer_client,
            config.namesrv_addrs,
            self._identity,
            self._register_body,
            timeout_s=config.register_broker_timeout_mills / 1000,
        )

    # --- construction helpers ---------------------------------------------------------
    def _file(self, directory: str, name: str) -> JsonConfigFile:
        return JsonConfigFile(self.disk, os.path.join(directory, name))

    def _store_config(self) -> StoreConfig:
        c = self.config
        return StoreConfig(
            store_path_root_dir=str(c.store_root),
            store_path_commit_log=c.store_path_commit_log,
            mapped_file_size_commitlog=c.mapped_file_size_commit_log,
            mapped_file_size_consume_queue=max(1, c.mapped_file_size_consume_queue // 20),
            flush_disk_type=c.flush_disk_type,
            flush_interval_commitlog_ms=c.flush_interval_commit_log,
            sync_flush_timeout_ms=c.sync_flush_timeout,
            max_message_size=c.max_message_size,
            disk_max_used_space_ratio=c.disk_max_used_space_ratio,
            file_reserved_time_hours=c.file_reserved_time,
            delete_when=c.delete_when,
            # The port is only known after bind; `start()` fixes it before opening.
            store_host=(self.ip1, c.listen_port),
        )

    def _transaction_settings(self) -> TransactionSettings:
        c = self.config
        return TransactionSettings(
            check_interval_ms=c.transaction_check_interval,
            timeout_ms=c.transaction_time_out,
            check_max=c.transaction_check_max,
            max_age_ms=c.file_reserved_time * 3_600_000,
        )

    # --- identity -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return f"{self.ip1}:{self.port}"

    @property
    def store_host(self) -> tuple[str, int]:
        return (self.ip1, self.port)

    @property
    def sync_flush(self) -> bool:
        return self.config.flush_disk_type == "SYNC_FLUSH"

    @property
    def is_slave(self) -> bool:
        """Refuses sends: configured as a slave, or a DLedger member that is not (yet)
        the master."""
        if self._dledger_store is not None:
            return not self._dledger_store.writable
        return self.config.is_slave

    def _identity(self) -> BrokerIdentity:
        c = self.config
        ip2 = c.broker_ip2 or self.ip1
        return BrokerIdentity(
            c.broker_cluster_name,
            c.broker_name,
            self.broker_id,
            self.address,
            f"{ip2}:{c.ha_listen_port}",
        )

    def _register_body(self) -> dict:
        wrapper = self.topic_config.to_json()
        if not _perm_is_full(self.config.broker_permission):
            # A read-only or write-only broker advertises its limits on every topic.
            for cfg in wrapper["topicConfigTable"].values():
                cfg["perm"] &= self.config.broker_permission
        return wrapper

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        try:
            self.topic_config.load()
            self.consumer_offsets.load()
            self.subscription_groups.load()
            self.schedule.load()
        except ValueError as exc:
            raise ConfigError(str(self.config.config_dir), str(exc)) from None
        # Bind first: a listenPort of 0 (tests) is only known now, and the store stamps
        # it into every record and offsetMsgId.
        await self.server.start()
        self.store.store.config.store_host = self.store_host
        try:
            await self.store.open()
        except BaseException:
            await self.server.stop()
            raise
        self.store.add_arrival_listener(self._message_arrived)
        self.topic_config.persist()
        self.stats.boot_timestamp_ms = self.clock_ms()
        self._register_wanted = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self._dledger_store is not None:
            try:
                await self._start_dledger(self._dledger_store)
            except BaseException:
                await self.store.close()
                await self.server.stop()
                raise
        elif not self.config.is_slave:
            self._schedule_running = True
            self.schedule.start()
            self.transactions.start()
            self.pop.start_revive()
            await self.pop.revive.wait_ready()  # pops are served from the start
        self._started = True
        await self.registrar.register_all()
        self._tasks = [
            loop.create_task(self._register_loop(), name="broker-register"),
            loop.create_task(
                self._periodic(
                    lambda: self._after_log_durable(self._flush_offsets),
                    self.config.flush_consumer_offset_interval / 1000,
                ),
                name="broker-offsets",
            ),
            loop.create_task(
                self._periodic(
                    lambda: self._after_log_durable(self.schedule.flush), _DELAY_OFFSET_FLUSH_S
                ),
                name="broker-delay-offsets",
            ),
            loop.create_task(
                self._periodic(self._scan_channels, _CHANNEL_SCAN_INTERVAL_S),
                name="broker-channels",
            ),
        ]
        if self._dledger_store is not None or self.config.is_slave:
            # slaves copy the master's metadata; in a DLedger group only the subscription
            # groups (every second), the rest travels in the log (see below)
            interval = 1.0 if self._dledger_store is not None else DEFAULT_SYNC_INTERVAL_S
            self._tasks.append(
                loop.create_task(
                    # in a DLedger group offsets, topics and delay progress travel in
                    # the log; the slaves copy only the subscription groups
                    SlaveSync(self, log_replicated=self._dledger_store is not None).run(
                        self._sync_source, interval
                    ),
                    name="broker-slave-sync",
                )
            )
        log.info("broker %s started at %s", self.config.broker_name, self.address)

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.registrar.unregister_all()
        self.pull_hold.wake_all()
        await self.pop.stop()
        await asyncio.sleep(0)  # let woken pulls answer before the server goes
        await self.schedule.stop()
        await self.transactions.stop()
        await self.server.stop()
        self._flush_offsets()
        if self._becoming_master is not None:
            self._becoming_master.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._becoming_master
        if self.dledger is not None:
            await self.dledger.stop()  # no more applies once the store closes
            self.dledger = self.dledger_member = None
        await self.store.close()
        await self.outer_client.close()
        log.info("broker %s stopped", self.config.broker_name)

    # --- DLedger mode ---------------------------------------------------------------------
    async def _start_dledger(self, store: DLedgerMessageStore) -> None:
        c = self.config
        peers = c.dledger_peers()
        port = int(peers[c.d_leger_self_id].rsplit(":", 1)[1])
        member_config = MemberConfig(
            data_file_size=c.mapped_file_size_commit_log,
            snapshot_threshold=0,  # the log is the product: never compacted
            preferred_leader=c.preferred_leader_id or None,
        )
        self.dledger = DLedgerServer(
            str(c.store_root / "dledger"),
            host=self._host,
            port=port,
            config=member_config,
            disk=self.disk,
        )
        await self.dledger.start()
        try:
            member = await self.dledger.add_group(
                c.d_leger_group, c.d_leger_self_id, peers, state_machine=store
            )
        except BaseException:
            await self.dledger.stop()
            self.dledger = None
            raise
        store.attach(member)
        self.dledger_member = member
        self.metadata_log = ReplicatedMetadata(
            self.consumer_offsets,
            self.topic_config,
            self.schedule,
            lambda: self.dledger_member,
            lambda: not self.is_slave,
        )
        store.on_meta = self.metadata_log.apply
        store.before_checkpoint = self._persist_replicated_metadata
        self.topic_config.on_local_change = self.metadata_log.topic_changed
        self.schedule.on_advance = self.metadata_log.delay_advanced
        member.on_role_change = self._dledger_role_changed
        self._dledger_role_changed(member.role, member.node.term, member.leader_id)  # type: ignore[union-attr]

    def _dledger_role_changed(self, role: Role, term: int, leader_id: str | None) -> None:
        if role is Role.LEADER:
            if self._becoming_master is None or self._becoming_master.done():
                self._becoming_master = asyncio.get_running_loop().create_task(
                    self._become_master(term), name="broker-become-master"
                )
            return
        if self._becoming_master is not None:
            self._becoming_master.cancel()
            self._becoming_master = None
        self._become_slave(f"the master is {leader_id or 'being elected'} (term {term})")
        if self._register_wanted is not None:
            # the NameServer's reply names the (new) master to copy metadata from
            self._register_wanted.set()

    def commit_offset(
        self, group: str, topic: str, queue_id: int, offset: int, *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """A consumer's progress: in a DLedger group's master through the log (with
        `wait`, a future for when a majority has it); elsewhere straight to the table."""
        if self.metadata_log is not None and not self.is_slave:
            return self.metadata_log.commit_offset(group, topic, queue_id, offset, wait=wait)
        self.consumer_offsets.commit(group, topic, queue_id, offset)
        return None

    def commit_master_progress(
        self, group: str, topic: str, queue_id: int, offset: int, *, wait: bool = False
    ) -> asyncio.Future[None] | None:
        """The progress of a master-only service (the reviver, the transaction checker,
        pops): dropped once this DLedger member is no longer the master. A round that
        ends after a lost leadership would otherwise write a floor past records the new
        leader cut from the log, and that node, master again later, would skip them."""
        if self.metadata_log is not None and self.is_slave:
            log.debug("not the master any more: %s/%s/%d progress %d dropped", group, topic,
                      queue_id, offset)  # fmt: skip
            return None
        return self.commit_offset(group, topic, queue_id, offset, wait=wait)

    def _persist_replicated_metadata(self) -> None:
        # what the applied entries changed must be on disk before the store records
        # them as applied: a restart does not replay them (topics are written at once)
        self.consumer_offsets.flush()
        self.schedule.flush()

    def _sync_source(self) -> str | None:
        """The master to copy metadata from, while this broker is a slave."""
        addr = self.master_addr
        if not self.is_slave or not addr or addr == self.address:
            return None
        return addr

    def _dledger_writes_lost(self) -> None:
        member = self.dledger_member
        if member is not None and member.is_leader:
            self._dledger_role_changed(Role.LEADER, member.node.term, member.leader_id)  # type: ignore[union-attr]

    async def _become_master(self, term: int) -> None:
        """Master once everything committed before this term is applied here (then the
        ConsumeQueues hold every queue offset handed out so far)."""
        member, store = self.dledger_member, self._dledger_store
        assert member is not None and store is not None
        node = member.node
        assert node is not None
        await member.wait_applied(node.log.last_index())
        if not member.is_leader or member.node is not node or node.term != term:
            return  # lost it meanwhile; the next role change decides
        stopping = self._schedule_stopping
        if stopping is not None and not stopping.done():
            # the last term's services are still stopping: starting them now, that stop
            # would then stop the new ones
            await stopping
            if not member.is_leader or member.node is not node or node.term != term:
                return
        store.open_for_writes()
        was_slave = self.broker_id != 0
        self.broker_id = 0
        if not self._schedule_running:
            self._schedule_running = True
            self.schedule.start()
            self.transactions.start()
        if not self.pop.revive.running:
            self.pop.start_revive()
        log.info("broker %s is the master (DLedger term %d)", self.config.broker_name, term)
        if was_slave and self._register_wanted is not None:
            self._register_wanted.set()

    def _become_slave(self, why: str) -> None:
        store = self._dledger_store
        assert store is not None
        store.close_for_writes(f"this broker is not the master: {why}")
        slave_id = self.config.dledger_slave_id()
        if self.broker_id != slave_id:
            self.broker_id = slave_id
            log.info("broker %s is a slave: %s", self.config.broker_name, why)
            if self._register_wanted is not None:
                self._register_wanted.set()
        if self._schedule_running:
            self._schedule_running = False
            # kept: a task nobody references may be collected before it finishes
            self._schedule_stopping = asyncio.get_running_loop().create_task(
                self._stop_master_services(), name="broker-schedule-stop"
            )
        self.pop.stop_revive()

    async def _stop_master_services(self) -> None:
        await self.schedule.stop()
        await self.transactions.stop()

    # --- periodic work --------------------------------------------------------------------
    async def _periodic(self, fn: Callable[[], object], interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                result = fn()
                if isinstance(result, Awaitable):
                    await result
            except Exception:
                log.exception("broker periodic task %s failed", getattr(fn, "__name__", fn))

    def _flush_offsets(self) -> None:
        self.consumer_offsets.flush()

    async def _after_log_durable(self, save: Callable[[], None]) -> None:
        """Saves progress only once the CommitLog records it covers are on disk: a pop's
        checkpoint, a revived or re-put copy, a transaction's check copy. Saved first,
        an ASYNC_FLUSH power loss would keep the progress and lose the records, and the
        messages behind them would never come back."""
        await self.store.store.flush()
        save()

    async def _register_loop(self) -> None:
        assert self._register_wanted is not None
        wanted = self._register_wanted
        period = self.register_period_ms / 1000
        # `_started` too, not only the cancellation: Python 3.11's wait_for can swallow
        # a cancellation that races with a wake-up, and stop() would wait forever
        while self._started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wanted.wait(), period)
            wanted.clear()
            if not self._started:
                return
            await self.register_now()

    async def register_now(self) -> None:
        results = await self.registrar.register_all()
        for r in results:
            if r.master_addr:
                self.master_addr = r.master_addr

    def _topics_changed(self) -> None:
        if self._register_wanted is not None:
            self._register_wanted.set()

    def _scan_channels(self) -> None:
        now = self.clock_ms()
        for conn in self.clients.expired(now, self.config.channel_expired_timeout):
            log.info("closing client channel %s: no heartbeat", conn.remote_address)
            self.clients.connection_closed(conn)
            conn.close()

    # --- events ---------------------------------------------------------------------------
    def _message_arrived(
        self, topic: str, queue_id: int, queue_offset: int, tags_code: int, props: dict
    ) -> None:
        self.pull_hold.notify_arrival(topic, queue_id, queue_offset, tags_code)
        self.pop.notify_arrival(topic)
        if topic == SCHEDULE_TOPIC:
            self.schedule.notify_arrival(queue_id)

    def _connection_closed(self, conn: RemotingConnection) -> None:
        self.clients.connection_closed(conn)

    def _consumer_ids_changed(self, group: str, info: ConsumerGroupInfo) -> None:
        """Tells every member of the group to rebalance now (NOTIFY_CONSUMER_IDS_CHANGED)."""
        cfg = self.subscription_groups.get(group)
        if cfg is not None and not cfg.notify_consumer_ids_changed_enable:
            return
        for conn in list(info.channels):
            if not conn.is_open:
                continue
            try:
                conn.oneway(
                    RemotingCommand(
                        code=RequestCode.NOTIFY_CONSUMER_IDS_CHANGED,
                        ext_fields={"consumerGroup": group},
                    )
                )
            except Exception as exc:
                log.debug("notify consumer ids changed to %s failed: %s", conn.remote_address, exc)


def _perm_is_full(perm: int) -> bool:
    return perm & 6 == 6
