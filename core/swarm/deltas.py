"""The averager of the low-communication mode: every peer of a round gets exactly the same average.

hivemind's all-reduce hands each peer the difference between the average and its own values,
compressed. With fp16 compression each peer then holds its own values plus a rounded difference, and
peers end up a rounding error apart (about 1e-5 for parameter changes of 0.05). After each outer step
the peers' global parameters must be identical, so here the peer that reduces a part sends the average
itself, rounded once by the round's compression, and rounds its own copy the same way: every peer
copies the same values in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import torch
from hivemind.averaging import DecentralizedAverager
from hivemind.averaging.allreduce import AllReduceRunner
from hivemind.averaging.partition import BannedException
from hivemind.compression import deserialize_torch_tensor, serialize_torch_tensor
from hivemind.compression.base import CompressionInfo
from hivemind.proto import averaging_pb2
from hivemind.utils import get_dht_time
from hivemind.utils.asyncio import amap_in_executor, as_aiter, azip

from hiveling.core.swarm.averagers import AdmittedCallers, GroupSizeMixin, WholeRounds

logger = logging.getLogger(__name__)


class SameResultRunner(AllReduceRunner):  # type: ignore[misc]
    """An all-reduce whose reducers send averages, not differences to each sender's values."""

    def _as_received(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` as the other peers receive them: once through the round's compression."""
        compression = self.tensor_part_container.compression
        received: torch.Tensor = deserialize_torch_tensor(
            compression.compress(values, CompressionInfo.from_tensor(values))
        )
        return received

    async def _communicate_with_peer(self, peer_id: Any) -> None:
        if peer_id != self.peer_id:
            await super()._communicate_with_peer(peer_id)
            return
        peer_index = self.ordered_peer_ids.index(peer_id)
        sender_index = self.sender_peer_ids.index(peer_id)
        for part_index, part in enumerate(self.parts_for_local_averaging):
            averaged = await self.tensor_part_reducer.accumulate_part(
                sender_index, part_index, part, weight=self.weight
            )
            received = self._as_received(averaged)
            self.tensor_part_container.register_processed_part(peer_index, part_index, received)

    async def _accumulate_parts_streaming(
        self, stream: AsyncIterator[Any], sender_index: int
    ) -> AsyncIterator[Any]:
        part_index = 0
        loop = asyncio.get_event_loop()
        try:
            async for part, weight, compression in amap_in_executor(
                _unpack_part,
                stream,
                max_prefetch=self.tensor_part_container.prefetch,
            ):
                try:
                    averaged = await self.tensor_part_reducer.accumulate_part(
                        sender_index, part_index, part, weight=weight
                    )
                    part_index += 1
                except BannedException:
                    break  # this sender was dropped from the round meanwhile
                # The average itself: the sender copies it in, rather than add a rounded difference.
                reply = await loop.run_in_executor(None, serialize_torch_tensor, averaged, compression)
                yield averaging_pb2.AveragingData(code=averaging_pb2.AVERAGED_PART, tensor_part=reply)
        finally:
            if part_index != self.tensor_part_reducer.num_parts:
                await self._ban_sender(self.sender_peer_ids[sender_index])


def _unpack_part(message: Any) -> tuple[torch.Tensor, float, Any]:
    return deserialize_torch_tensor(message.tensor_part), message.weight, message.tensor_part.compression


class DeltaAverager(AdmittedCallers, WholeRounds, GroupSizeMixin, DecentralizedAverager):  # type: ignore[misc]
    """Averages the peers' parameter changes; serves the state the optimizer gives it to newcomers.

    Args:
        averaged_tensors: One buffer per parameter; the optimizer writes its change in before a round,
            and finds the group's weighted average there after it.
        serve_state: Called (from a background thread) when a peer downloads the state: metadata and
            the tensors to send.
    """

    def __init__(
        self,
        averaged_tensors: Sequence[torch.Tensor],
        *,
        serve_state: Callable[[], tuple[dict[str, Any], list[torch.Tensor]]],
        **kwargs: Any,
    ) -> None:
        self._serve_state = serve_state
        super().__init__(averaged_tensors, **kwargs)

    def get_current_state(self) -> tuple[dict[str, Any], list[torch.Tensor], None]:
        metadata, tensors = self._serve_state()
        return metadata, tensors, None

    async def _run_allreduce_inplace_(
        self, tensors: Sequence[torch.Tensor], group_info: Any, group_id: bytes | None = None, **kwargs: Any
    ) -> None:
        group_id = group_info.group_id if group_id is None else group_id
        runner = SameResultRunner(
            p2p=self._p2p,
            servicer_type=type(self),
            prefix=self.prefix,
            tensors=tensors,
            group_id=group_id,
            ordered_peer_ids=group_info.peer_ids,
            **kwargs,
        )
        self._running_groups[group_id].set_result(runner)
        async for tensor, averaged in azip(as_aiter(*tensors), runner):
            tensor.copy_(averaged)
        self.last_updated = get_dht_time()
        self._state_updated.set()
