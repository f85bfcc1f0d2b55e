"""trio_chat: a real-time WebSocket chat server built on trio.

The public surface is re-exported here; the modules behind it are private.
"""

from ._auth import (
    AnonymousAuthenticator as AnonymousAuthenticator,
)
from ._auth import (
    Authenticator as Authenticator,
)
from ._auth import (
    HandshakeRequest as HandshakeRequest,
)
from ._auth import (
    Identity as Identity,
)
from ._auth import (
    Rejection as Rejection,
)
from ._auth import (
    TokenAuthenticator as TokenAuthenticator,
)
from ._auth import (
    make_token as make_token,
)
from ._config import Config as Config
from ._config import ConfigError as ConfigError
from ._frames import text_frame as text_frame
from ._hub import Hub as Hub
from ._hub_state import Delivery as Delivery
from ._hub_state import HubState as HubState
from ._hub_state import HubStats as HubStats
from ._protocol import (
    Chat as Chat,
)
from ._protocol import (
    ChatAck as ChatAck,
)
from ._protocol import (
    ChatMessage as ChatMessage,
)
from ._protocol import (
    ClientEvent as ClientEvent,
)
from ._protocol import (
    Direct as Direct,
)
from ._protocol import (
    DirectAck as DirectAck,
)
from ._protocol import (
    DirectMessage as DirectMessage,
)
from ._protocol import (
    ErrorEvent as ErrorEvent,
)
from ._protocol import (
    Join as Join,
)
from ._protocol import (
    Joined as Joined,
)
from ._protocol import (
    Leave as Leave,
)
from ._protocol import (
    Left as Left,
)
from ._protocol import (
    Presence as Presence,
)
from ._protocol import (
    PresenceUpdate as PresenceUpdate,
)
from ._protocol import (
    ProtocolError as ProtocolError,
)
from ._protocol import (
    ServerEvent as ServerEvent,
)
from ._protocol import (
    System as System,
)
from ._protocol import (
    Typing as Typing,
)
from ._protocol import (
    TypingNotice as TypingNotice,
)
from ._protocol import (
    Welcome as Welcome,
)
from ._protocol import (
    encode_client_event as encode_client_event,
)
from ._protocol import (
    parse_client_frame as parse_client_frame,
)
from ._protocol import (
    parse_server_frame as parse_server_frame,
)
from ._server import ChatServer as ChatServer
from ._server import ServerStats as ServerStats

__version__ = "0.1.0"
