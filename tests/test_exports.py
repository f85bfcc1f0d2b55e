"""The public surface: what ``trio_chat`` and its public modules export."""

import importlib

import trio_chat

EXPECTED = {
    "AnonymousAuthenticator",
    "Authenticator",
    "HandshakeRequest",
    "Identity",
    "Rejection",
    "TokenAuthenticator",
    "make_token",
    "Config",
    "ConfigError",
    "Chat",
    "ChatAck",
    "ChatMessage",
    "ClientEvent",
    "Direct",
    "DirectAck",
    "DirectMessage",
    "ErrorEvent",
    "Join",
    "Joined",
    "Leave",
    "Left",
    "Presence",
    "PresenceUpdate",
    "ProtocolError",
    "ServerEvent",
    "System",
    "Typing",
    "TypingNotice",
    "Welcome",
    "Edit",
    "Delete",
    "React",
    "ReadHistory",
    "MessageEdited",
    "MessageDeleted",
    "ReactionChanged",
    "HistoryPage",
    "MarkRead",
    "ListRooms",
    "SetTopic",
    "ReadMarker",
    "RoomList",
    "encode_client_event",
    "parse_client_frame",
    "parse_server_frame",
    "ChatServer",
    "ConnectionInfo",
    "ServerStats",
    "ACCEPT",
    "Accept",
    "Checked",
    "Policy",
    "Reject",
    "Replace",
    "Sender",
    "Verdict",
    "Bot",
    "EventStream",
    "StreamClosed",
    "StreamOverflow",
    "Command",
    "CommandCall",
    "CommandHandler",
    "CommandResult",
    "Ban",
    "BANNED",
    "KICKED",
}


def public_names(module):
    return {name for name in dir(module) if not name.startswith("_")}


def test_top_level_surface_is_pinned():
    names = public_names(trio_chat) - {"client", "testing"}
    assert names == EXPECTED


def test_public_names_come_from_private_modules():
    # Type aliases (Callable[[HandshakeRequest], Identity], unions) have no
    # __module__ of their own.
    aliases = {"Authenticator", "Checked", "Verdict", "CommandHandler", "BANNED", "KICKED"}
    for name in EXPECTED - aliases:
        module = getattr(trio_chat, name).__module__
        assert module.startswith("trio_chat._"), (name, module)


def test_public_modules_import():
    for module in ("trio_chat.testing", "trio_chat.client"):
        importlib.import_module(module)
