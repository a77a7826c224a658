"""The pixel-domain sync critic: a network that judges decoded candidates (:mod:`.network`) and its
training stage (:mod:`.stage`, imported only by ``mmldm train sync-critic``)."""

from .network import (
    SYNC_CRITIC_NAME,
    SYNC_CRITIC_WHAT,
    SyncCritic,
    SyncCriticConfig,
    SyncCriticInfo,
    load_sync_critic,
    read_sync_critic_info,
    save_sync_critic,
)

__all__ = ["SYNC_CRITIC_NAME", "SYNC_CRITIC_WHAT", "SyncCritic", "SyncCriticConfig", "SyncCriticInfo",
           "load_sync_critic", "read_sync_critic_info", "save_sync_critic"]
