"""QueryRoute and QueryAssignment."""

from __future__ import annotations

from ledgermq.proxy import validation
from ledgermq.proxy.activities.context import CallContext
from ledgermq.proxy.backend import ClusterBackend
from ledgermq.proxy.protocol import definition_pb2 as pb
from ledgermq.proxy.protocol import service_pb2 as svc
from ledgermq.proxy.route import Endpoint, accept_message_types, assignment_queues, route_queues
from ledgermq.proxy.status import Code, ProxyError, ok


class RouteActivity:
    def __init__(self, backend: ClusterBackend, advertise: AdvertisedEndpoint) -> None:
        self._backend = backend
        self._advertise = advertise

    async def query_route(
        self, req: svc.QueryRouteRequest, ctx: CallContext
    ) -> svc.QueryRouteResponse:
        topic = validation.check_topic(req.topic.name)
        endpoint = self._advertise.for_request(req.endpoints)
        route = await self._backend.route(topic)
        attributes = await self._backend.topic_attributes(topic)
        queues = route_queues(req.topic, route, accept_message_types(attributes), endpoint)
        return svc.QueryRouteResponse(status=ok(), message_queues=queues)

    async def query_assignment(
        self, req: svc.QueryAssignmentRequest, ctx: CallContext
    ) -> svc.QueryAssignmentResponse:
        validation.check_topic(req.topic.name)
        validation.check_group(req.group.name)
        endpoint = self._advertise.for_request(req.endpoints)
        route = await self._backend.route(req.topic.name)
        # Orderly groups get one assignment per queue (as the Java proxy does), others
        # one per broker with queue id -1.
        fifo = await self._backend.is_orderly_group(req.group.name, req.topic.name)
        assignments = assignment_queues(req.topic, route, endpoint, fifo=fifo)
        if not assignments:
            raise ProxyError(Code.FORBIDDEN, f"topic {req.topic.name!r} has no readable queue")
        return svc.QueryAssignmentResponse(status=ok(), assignments=assignments)


class AdvertisedEndpoint:
    """The address put in route queues: `advertisedHost` if configured, else the host
    the client used to reach us (its access point), always with our real port."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def for_request(self, endpoints: pb.Endpoints) -> Endpoint:
        if self.host:
            return Endpoint(self.host, self.port)
        for address in endpoints.addresses:
            if address.host:
                return Endpoint(address.host, self.port)
        raise ProxyError(Code.ILLEGAL_ACCESS_POINT, "the request carries no endpoints")
