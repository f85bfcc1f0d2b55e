"""trio_chat: a real-time WebSocket chat server built on trio.

The public surface is re-exported here; the modules behind it are private.
"""

from ._auth import (
    AnonymousAuthenticator as AnonymousAuthenticator,
    Authenticator as Authenticator,
    HandshakeRequest as HandshakeRequest,
    Identity as Identity,
    Rejection as Rejection,
    TokenAuthenticator as TokenAuthenticator,
    make_token as make_token,
)
from ._bots import Bot as Bot
from ._commands import CommandCall as CommandCall, CommandHandler as CommandHandler
from ._config import Config as Config, ConfigError as ConfigError
from ._events import (
    EventStream as EventStream,
    StreamClosed as StreamClosed,
    StreamOverflow as StreamOverflow,
)
from ._message_events import (
    HistoryPage as HistoryPage,
    MessageDeleted as MessageDeleted,
    MessageEdited as MessageEdited,
    ReactionChanged as ReactionChanged,
)
from ._message_frames import (
    Delete as Delete,
    Edit as Edit,
    React as React,
    ReadHistory as ReadHistory,
)
from ._moderation import Ban as Ban
from ._moderator import BANNED as BANNED, KICKED as KICKED
from ._policy import (
    ACCEPT as ACCEPT,
    Accept as Accept,
    Checked as Checked,
    Policy as Policy,
    Reject as Reject,
    Replace as Replace,
    Sender as Sender,
    Verdict as Verdict,
)
from ._protocol import (
    Chat as Chat,
    ChatAck as ChatAck,
    ChatMessage as ChatMessage,
    ClientEvent as ClientEvent,
    Command as Command,
    CommandResult as CommandResult,
    Direct as Direct,
    DirectAck as DirectAck,
    DirectMessage as DirectMessage,
    ErrorEvent as ErrorEvent,
    Join as Join,
    Joined as Joined,
    Leave as Leave,
    Left as Left,
    Presence as Presence,
    PresenceUpdate as PresenceUpdate,
    ProtocolError as ProtocolError,
    ServerEvent as ServerEvent,
    System as System,
    Typing as Typing,
    TypingNotice as TypingNotice,
    Welcome as Welcome,
    encode_client_event as encode_client_event,
    parse_client_frame as parse_client_frame,
    parse_server_frame as parse_server_frame,
)
from ._room_frames import (
    ListRooms as ListRooms,
    MarkRead as MarkRead,
    ReadMarker as ReadMarker,
    RoomList as RoomList,
    SetTopic as SetTopic,
)
from ._server import ChatServer as ChatServer
from ._stats import ConnectionInfo as ConnectionInfo, ServerStats as ServerStats
from ._version import __version__ as __version__
