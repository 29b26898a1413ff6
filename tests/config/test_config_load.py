"""Loading and validating the configuration: TOML file < FABRIC_* environment < overrides."""

from __future__ import annotations

import json
import math
import textwrap

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.config import (
    SYSTEM_EVENTS,
    ConfigError,
    EventHandlerConfig,
    FabricConfig,
    HubConfig,
    ServerConfig,
    config_as_dict,
    load_config,
    loads_config,
    matches_user_event,
    parse_event_handler_flag,
    plan_reload,
)

BRIEF_EXAMPLE = """
[server]
host = "127.0.0.1"
port = 8080
access_keys = ["primary-key", "secondary-key"]   # any of them is accepted
max_message_bytes = 1048576                       # larger frames close with 1009

[hubs.chat]
anonymous_connect = false

[[hubs.chat.event_handlers]]
url_template = "http://127.0.0.1:3000/eventhandler/{event}"   # {hub} and {event} allowed
user_event_pattern = "*"                                       # "*", "a,b", or "" for none
system_events = ["connect", "connected", "disconnected"]
"""


def load(text: str, *, env=None, overrides=None, source="fabric.toml") -> FabricConfig:
    return loads_config(textwrap.dedent(text), source=source, env={} if env is None else env, overrides=overrides)


def problems(text: str, **kwargs) -> list[tuple[str | None, str | None, str]]:
    with pytest.raises(ConfigError) as info:
        load(text, **kwargs)
    return [(p.source, p.key, p.message) for p in info.value.problems]


def one_problem(text: str, **kwargs) -> tuple[str | None, str | None, str]:
    found = problems(text, **kwargs)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------------- good input


def test_the_design_brief_example_loads(tmp_path):
    path = tmp_path / "fabric.toml"
    path.write_text(BRIEF_EXAMPLE)
    config = load_config(path, env={})
    assert config.server.host == "127.0.0.1" and config.server.port == 8080
    assert config.server.access_keys == ("primary-key", "secondary-key")
    assert config.server.max_message_bytes == 1048576
    chat = config.hub("chat")
    assert chat.anonymous_connect is False
    assert chat.event_handlers == (
        EventHandlerConfig(
            url_template="http://127.0.0.1:3000/eventhandler/{event}",
            user_event_pattern="*",
            system_events=("connect", "connected", "disconnected"),
        ),
    )
    assert chat.handler_for_system_event("connect") is chat.event_handlers[0]
    assert chat.handler_for_user_event("anything") is chat.event_handlers[0]
    assert config.hub("CHAT") is chat  # hub names are case-insensitive
    assert config.hub("unconfigured") == HubConfig()


def test_no_file_no_env_gives_the_defaults():
    config = load_config(env={})
    assert config == FabricConfig()
    server = config.server
    assert (server.host, server.port, server.access_keys) == ("127.0.0.1", 8080, ())
    assert (server.outbox_max_messages, server.outbox_max_bytes, server.slow_consumer) == (65536, 4 * 1048576, "close")
    assert (server.reliable_buffer_count, server.limits, server.stall_timeout) == (65536, "fabric", 20.0)
    assert (server.keepalive_interval, server.handshake_timeout, server.idle_timeout) == (20.0, 10.0, 120.0)
    assert config.hubs == {}
    assert config.hub("chat").event_handlers == ()


def test_every_server_key_can_be_set():
    config = load(
        """
        [server]
        host = "0.0.0.0"
        port = 0
        access_keys = ["a", "b", "a"]
        public_endpoint = "https://fabric.example:8443"
        max_message_bytes = 2048
        max_request_body_bytes = 4096
        max_header_bytes = 8192
        max_connections = 10
        max_groups_per_connection = 3
        outbox_max_messages = 5
        outbox_max_bytes = 4096
        slow_consumer = "Drop"
        keepalive_interval = 5
        handshake_timeout = 2.5
        idle_timeout = 30
        shutdown_timeout = 0
        token_leeway = 0
        reconnect_window = 10
        reliable_buffer_messages = 10
        reliable_buffer_bytes = 100000
        ack_cache_size = 0
        upstream_timeout = 3
        log_level = "DEBUG"
        stall_timeout = 7
        limits = "Azure"
        close_timeout = 0.5
        max_message_fragments = 16
        """
    )
    s = config.server
    assert (s.stall_timeout, s.limits, s.close_timeout, s.max_message_fragments) == (7.0, "azure", 0.5, 16)
    assert s.reliable_buffer_count == 10  # the azure profile caps the count at 1000; 10 is below
    assert s.port == 0 and s.access_keys == ("a", "b")  # duplicates dropped, order kept
    assert s.slow_consumer == "drop" and s.log_level == "debug"
    assert s.max_groups_per_connection == 3
    assert isinstance(s.keepalive_interval, float) and s.keepalive_interval == 5.0
    assert s.public_endpoint == "https://fabric.example:8443"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:3000/eventhandler/{event}",
        "https://handler.example/api/{hub}/{event}?code=secret",
        "http://user:pass@h:1/{hub}",
        "http://h",
        "HTTPS://H/x?hub={hub}&event={event}",
    ],
)
def test_good_url_templates(url):
    config = load(f'[[hubs.chat.event_handlers]]\nurl_template = "{url}"\n')
    assert config.hub("chat").event_handlers[0].url_template == url


def test_handler_defaults_and_normalisation():
    config = load(
        """
        [[hubs.chat.event_handlers]]
        url_template = "http://h/{event}"
        [[hubs.chat.event_handlers]]
        url_template = "http://h2/{event}"
        user_event_pattern = " a , b "
        system_events = ["Connect", "connect", "DISCONNECTED"]
        """
    )
    first, second = config.hub("chat").event_handlers
    assert (first.user_event_pattern, first.system_events) == ("*", ())
    assert second.system_events == ("connect", "disconnected")
    assert second.matches_user_event("a") and second.matches_user_event("b") and not second.matches_user_event("c")
    assert config.hub("chat").handler_for_user_event("zzz") is first
    assert config.hub("chat").handler_for_system_event("connect") is second
    assert config.hub("chat").handler_for_system_event("connected") is None


@pytest.mark.parametrize(
    "pattern,event,expected",
    [
        ("*", "x", True),
        (" * ", "x", True),
        ("", "x", False),
        ("a", "a", True),
        ("a", "b", False),
        ("a,b", "b", True),
        ("a, b", "b", True),
        ("a,b", "A", False),
    ],
)
def test_matches_user_event(pattern, event, expected):
    assert matches_user_event(pattern, event) is expected
    handler = EventHandlerConfig(url_template="http://h/{event}", user_event_pattern=pattern)
    assert handler.matches_user_event(event) is expected


def test_url_for_substitutes_and_encodes():
    handler = EventHandlerConfig(url_template="http://h:1/{hub}/x/{event}?e={event}")
    assert handler.url_for("chat", "message") == "http://h:1/chat/x/message?e=message"
    assert handler.url_for("a[1]", "a b/c") == "http://h:1/a%5B1%5D/x/a%20b%2Fc?e=a%20b%2Fc"


def test_hub_with_punctuation_needs_a_quoted_toml_key():
    config = load('[hubs."a.b"]\nanonymous_connect = true\n')
    assert config.hub("a.b").anonymous_connect is True
    assert config.hub("a").anonymous_connect is False


def test_config_as_dict_redacts_keys():
    config = load(BRIEF_EXAMPLE)
    data = config_as_dict(config)
    assert data["server"]["access_keys"] == ["***", "***"]
    assert data["hubs"]["chat"]["event_handlers"][0]["system_events"] == list(SYSTEM_EVENTS)
    assert config_as_dict(config, redact_keys=False)["server"]["access_keys"] == ["primary-key", "secondary-key"]
    json.dumps(data)  # plain data


# ----------------------------------------------------------------------------- files and TOML


def test_errors_name_the_file(tmp_path):
    path = tmp_path / "conf.toml"
    path.write_text("[server]\nport = 99999\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: server.port: must be between 0 and 65535, got 99999"
    assert info.value.source == str(path) and info.value.key == "server.port"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_fabric_config_env_names_the_file(tmp_path):
    path = tmp_path / "from-env.toml"
    path.write_text('[server]\nhost = "10.0.0.1"\n')
    assert load_config(env={"FABRIC_CONFIG": str(path)}).server.host == "10.0.0.1"
    with pytest.raises(ConfigError) as info:
        load_config(env={"FABRIC_CONFIG": str(tmp_path / "missing.toml")})
    assert "named by environment variable FABRIC_CONFIG" in str(info.value)
    assert str(tmp_path / "missing.toml") in str(info.value)
    # an explicit path wins over FABRIC_CONFIG
    other = tmp_path / "explicit.toml"
    other.write_text('[server]\nhost = "10.0.0.2"\n')
    assert load_config(other, env={"FABRIC_CONFIG": str(path)}).server.host == "10.0.0.2"


def test_directory_and_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, env={})
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, env={})


@pytest.mark.parametrize("text", ["[server", "port = = 1", "[server]\nport = 1\nport = 2", 'a = "unterminated'])
def test_invalid_toml(text):
    source, key, message = one_problem(text)
    assert source == "fabric.toml" and key is None and message.startswith("invalid TOML: ")


# ---------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "text,key,hint",
    [
        ("[sever]\n", "sever", "did you mean 'server'?"),
        ("[server]\nprot = 1\n", "server.prot", "did you mean 'port'?"),
        ("[server]\naccess_key = 'k'\n", "server.access_key", "did you mean 'access_keys'?"),
        ("[hubs.chat]\nanonymous = true\n", "hubs.chat.anonymous", "did you mean 'anonymous_connect'?"),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nurlTemplate = 'x'\n",
            "hubs.chat.event_handlers[0].urlTemplate",
            "did you mean 'url_template'?",
        ),
        ("[server]\nzzzzzz = 1\n", "server.zzzzzz", "known keys: host, port"),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(text, key, hint):
    source, got_key, message = one_problem(text)
    assert (source, got_key) == ("fabric.toml", key)
    assert message.startswith("unknown key") and hint in message


def test_unknown_key_does_not_hide_other_problems():
    found = problems("[server]\nprot = 1\nport = 'x'\n[hubs.chat]\nanonymous_connect = 'no'\nevent_handlers = 3\n")
    keys = {key for _, key, _ in found}
    assert keys == {"server.prot", "server.port", "hubs.chat.anonymous_connect", "hubs.chat.event_handlers"}


# ----------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    "text,key,expected",
    [
        ("[server]\nport = '8080'\n", "server.port", "expected an integer, got '8080' (string)"),
        ("[server]\nport = 80.0\n", "server.port", "expected an integer"),
        ("[server]\nport = true\n", "server.port", "expected an integer, got True (boolean)"),
        ("[server]\nhost = 127\n", "server.host", "expected a string"),
        ("[server]\naccess_keys = 'k'\n", "server.access_keys", "expected an array of strings, got 'k' (string)"),
        ("[server]\naccess_keys = [1]\n", "server.access_keys", "expected an array of strings"),
        ("[server]\nmax_message_bytes = 1.5\n", "server.max_message_bytes", "expected an integer"),
        ("[server]\nkeepalive_interval = '20'\n", "server.keepalive_interval", "expected a number of seconds"),
        ("[server]\nidle_timeout = false\n", "server.idle_timeout", "expected a number of seconds"),
        ("[server]\nslow_consumer = 1\n", "server.slow_consumer", "expected a string"),
        ("[server]\npublic_endpoint = 1\n", "server.public_endpoint", "expected a string"),
        ("server = 1\n", "server", "expected a table"),
        ("hubs = 1\n", "hubs", "expected a table of hubs"),
        ("hubs = {chat = 1}\n", "hubs.chat", "expected a table"),
        ("[hubs.chat]\nanonymous_connect = 'false'\n", "hubs.chat.anonymous_connect", "expected true or false"),
        ("[hubs.chat]\nevent_handlers = {url_template = 'http://h'}\n", "hubs.chat.event_handlers", "array of tables"),
        ("[hubs.chat]\nevent_handlers = [1]\n", "hubs.chat.event_handlers[0]", "expected a table"),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 1\n",
            "hubs.chat.event_handlers[0].url_template",
            "expected a string",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nsystem_events = 'connect'\n",
            "hubs.chat.event_handlers[0].system_events",
            "expected an array of strings",
        ),
        (
            "[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nuser_event_pattern = ['a']\n",
            "hubs.chat.event_handlers[0].user_event_pattern",
            "expected a string",
        ),
    ],
)
def test_type_errors_name_the_key_and_the_expected_type(text, key, expected):
    source, got_key, message = one_problem(text)
    assert (source, got_key) == ("fabric.toml", key)
    assert expected in message


def test_missing_url_template():
    assert one_problem("[[hubs.chat.event_handlers]]\nuser_event_pattern = ''\n") == (
        "fabric.toml",
        "hubs.chat.event_handlers[0].url_template",
        "is required but missing",
    )


# ------------------------------------------------------------------------------ bad values


@pytest.mark.parametrize(
    "url,expected",
    [
        ("ftp://h/x", "http://, https:// or tunnel:///"),
        ("/relative/{event}", "http://, https:// or tunnel:///"),
        ("h:3000/x", "http://, https:// or tunnel:///"),
        ("http:///x", "has no host"),
        ("http://{hub}.example/x", "not allowed in the host part"),
        ("http://h:{event}/x", "not allowed in the host part"),
        ("http://h/{Event}", "unknown placeholder {Event}"),
        ("http://h/{user}", "unknown placeholder {user}"),
        ("http://h/{event", "unbalanced"),
        ("http://h/event}", "unbalanced"),
        ("http://h/a b", "whitespace"),
        ("http://h:99999/x", "invalid port"),
        ("http://h:port/x", "invalid port"),
        ("http://h/x#frag", "fragment"),
        ("http://[::1/x", "not a valid URL"),
        ("", "must not be empty"),
    ],
)
def test_bad_url_templates(url, expected):
    source, key, message = one_problem(f"[[hubs.chat.event_handlers]]\nurl_template = {json.dumps(url)}\n")
    assert (source, key) == ("fabric.toml", "hubs.chat.event_handlers[0].url_template")
    assert expected in message


@pytest.mark.parametrize(
    "pattern,expected",
    [("a,,b", "empty event name"), ("*,a", "cannot be combined"), ("a b", "whitespace"), ("a*", "'*'"), (",", "empty")],
)
def test_bad_user_event_patterns(pattern, expected):
    _, key, message = one_problem(
        f"[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nuser_event_pattern = {json.dumps(pattern)}\n"
    )
    assert key == "hubs.chat.event_handlers[0].user_event_pattern" and expected in message


def test_bad_system_event():
    _, key, message = one_problem("[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\nsystem_events = ['message']\n")
    assert key == "hubs.chat.event_handlers[0].system_events"
    assert "unknown system event 'message'" in message


@pytest.mark.parametrize("port", [-1, 65536, 2**40])
def test_bad_port(port):
    assert one_problem(f"[server]\nport = {port}\n")[1:] == ("server.port", f"must be between 0 and 65535, got {port}")


@pytest.mark.parametrize(
    "key",
    [
        "max_message_bytes",
        "max_request_body_bytes",
        "max_header_bytes",
        "max_connections",
        "max_groups_per_connection",
        "outbox_max_messages",
        "outbox_max_bytes",
        "reliable_buffer_messages",
        "reliable_buffer_bytes",
        "ack_cache_size",
    ],
)
def test_negative_sizes(key):
    found = problems(f"[server]\n{key} = -1\n")
    assert found[0][:2] == ("fabric.toml", f"server.{key}") and "got -1" in found[0][2]


@pytest.mark.parametrize(
    "key,value",
    [
        ("keepalive_interval", "0"),
        ("keepalive_interval", "-1"),
        ("handshake_timeout", "0"),
        ("idle_timeout", "nan"),
        ("shutdown_timeout", "-0.5"),
        ("token_leeway", "inf"),
        ("reconnect_window", "0"),
        ("upstream_timeout", "1e9"),
    ],
)
def test_bad_durations(key, value):
    _, got_key, message = problems(f"[server]\n{key} = {value}\n")[0]
    assert got_key == f"server.{key}" and ("must be" in message)


@pytest.mark.parametrize(
    "text,key,expected",
    [
        ("[server]\nslow_consumer = 'block'\n", "server.slow_consumer", "'close', 'drop'"),
        ("[server]\nlog_level = 'loud'\n", "server.log_level", "'debug'"),
        ("[server]\nhost = ''\n", "server.host", "host name or IP address"),
        ("[server]\nhost = 'http://h'\n", "server.host", "not a URL"),
        ("[server]\nhost = '[::1]'\n", "server.host", "without brackets"),
        ("[server]\naccess_keys = ['']\n", "server.access_keys", "is empty"),
        ("[server]\naccess_keys = ['a;b']\n", "server.access_keys", "';'"),
        ("[server]\naccess_keys = ['a b']\n", "server.access_keys", "whitespace"),
        ("[server]\naccess_keys = [" + ",".join(f"'k{i}'" for i in range(17)) + "]\n", "server.access_keys", "at most 16"),
        ("[server]\npublic_endpoint = 'ws://h'\n", "server.public_endpoint", "http:// or https://"),
        ("[server]\npublic_endpoint = 'http://h/?x=1'\n", "server.public_endpoint", "query"),
        ("[server]\nmax_header_bytes = 100\n", "server.max_header_bytes", "between 1024"),
        ("[server]\nidle_timeout = 10\n", "server.idle_timeout", "longer than keepalive_interval"),
        ("[hubs.1chat]\n", "hubs.1chat", "invalid hub name"),
        ('[hubs."a b"]\n', 'hubs."a b"', "invalid hub name"),
        ("[hubs.chat]\n[hubs.Chat]\n", "hubs.Chat", "case-insensitive"),
    ],
)
def test_bad_values(text, key, expected):
    source, got_key, message = one_problem(text)
    assert (source, got_key) == ("fabric.toml", key)
    assert expected in message


def test_small_outbox_is_allowed():
    config = load("[server]\noutbox_max_bytes = 1024\nmax_message_bytes = 8388608\n")
    assert (config.server.outbox_max_bytes, config.server.max_message_bytes) == (1024, 8388608)


def test_too_many_event_handlers():
    text = "".join("[[hubs.chat.event_handlers]]\nurl_template = 'http://h'\n" for _ in range(65))
    assert one_problem(text)[1:] == ("hubs.chat.event_handlers", "at most 64 event handlers per hub, got 65")


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as info:
        load("[server]\nport = -1\nhost = ''\n[hubs.chat]\nanonymous_connect = 1\n")
    text = str(info.value)
    assert text.startswith("3 configuration problems:")
    for key in ("server.port", "server.host", "hubs.chat.anonymous_connect"):
        assert f"fabric.toml: {key}: " in text


# ----------------------------------------------------------------------------- environment


def test_environment_overrides_the_file():
    config = load(
        "[server]\nhost = 'file'\nport = 1\naccess_keys = ['file-key']\nmax_message_bytes = 10\n",
        env={"FABRIC_HOST": "envhost", "FABRIC_PORT": "2", "FABRIC_MAX_MESSAGE_BYTES": "20", "UNRELATED": "x"},
    )
    assert (config.server.host, config.server.port, config.server.max_message_bytes) == ("envhost", 2, 20)
    assert config.server.access_keys == ("file-key",)


def test_access_key_environment_variables():
    assert load("", env={"FABRIC_ACCESS_KEY": "one"}).server.access_keys == ("one",)
    assert load("", env={"FABRIC_ACCESS_KEYS": "a, b,,c"}).server.access_keys == ("a", "b", "c")
    both = load("", env={"FABRIC_ACCESS_KEY": "p", "FABRIC_ACCESS_KEYS": "a,p"})
    assert both.server.access_keys == ("p", "a")


def test_every_server_field_has_an_environment_variable():
    env = {"FABRIC_SLOW_CONSUMER": "drop", "FABRIC_KEEPALIVE_INTERVAL": "2.5", "FABRIC_LOG_LEVEL": "WARNING",
           "FABRIC_PUBLIC_ENDPOINT": "http://proxy:1"}
    server = load("", env=env).server
    assert (server.slow_consumer, server.keepalive_interval, server.log_level) == ("drop", 2.5, "warning")
    assert server.public_endpoint == "http://proxy:1"


def test_empty_environment_variables_are_unset():
    assert load("[server]\nport = 5\n", env={"FABRIC_PORT": "", "FABRIC_HOST": "  "}).server.port == 5


@pytest.mark.parametrize(
    "var,value,expected",
    [
        ("FABRIC_PORT", "abc", "expected an integer, got 'abc'"),
        ("FABRIC_PORT", "80.5", "expected an integer"),
        ("FABRIC_PORT", "70000", "must be between 0 and 65535"),
        ("FABRIC_MAX_MESSAGE_BYTES", "-5", "must be between 1"),
        ("FABRIC_MAX_MESSAGE_BYTES", "1MB", "expected an integer"),
        ("FABRIC_KEEPALIVE_INTERVAL", "nan", "finite"),
        ("FABRIC_KEEPALIVE_INTERVAL", "soon", "expected a number"),
        ("FABRIC_ACCESS_KEYS", " , ", "comma-separated"),
        ("FABRIC_SLOW_CONSUMER", "wait", "must be one of"),
        ("FABRIC_HOST", "http://x", "not a URL"),
    ],
)
def test_bad_environment_values_name_the_variable(var, value, expected):
    source, key, message = one_problem("", env={var: value})
    assert source == f"environment variable {var}"
    assert key == "server." + var.removeprefix("FABRIC_").lower()
    assert expected in message
    with pytest.raises(ConfigError, match=f"^environment variable {var}: "):
        load("", env={var: value})


def test_bad_access_key_env_names_the_variable():
    source, key, message = one_problem("", env={"FABRIC_ACCESS_KEY": "a;b"})
    assert source == "environment variable FABRIC_ACCESS_KEY" and key == "server.access_keys" and "';'" in message


# ------------------------------------------------------------------------------- overrides


def test_precedence_file_then_env_then_overrides():
    text = "[server]\nhost = 'file'\nport = 1\nidle_timeout = 100\n"
    env = {"FABRIC_HOST": "env", "FABRIC_PORT": "2"}
    config = load(text, env=env, overrides={"port": 3, "host": None})
    assert (config.server.host, config.server.port, config.server.idle_timeout) == ("env", 3, 100.0)
    assert load(text, env={}, overrides={"host": "flag"}).server.host == "flag"


def test_access_key_override_is_primary_and_beats_the_environment():
    config = load("[server]\naccess_keys = ['file']\n", env={"FABRIC_ACCESS_KEY": "env"}, overrides={"access_key": "flag"})
    assert config.server.access_keys == ("flag",)
    merged = load("", overrides={"access_keys": ["b", "c"], "access_key": "a"})
    assert merged.server.access_keys == ("a", "b", "c")


def test_string_overrides_are_parsed_like_environment_values():
    config = load("", overrides={"port": "9000", "access_keys": "x,y", "keepalive_interval": "3"})
    assert (config.server.port, config.server.access_keys, config.server.keepalive_interval) == (9000, ("x", "y"), 3.0)


def test_bad_overrides():
    assert one_problem("", overrides={"prot": 1}) == ("overrides", "prot", "unknown override; did you mean 'port'?")
    assert one_problem("", overrides={"port": "x"})[:2] == ("overrides", "server.port")
    source, key, message = one_problem("[server]\nport = 1\n", overrides={"port": -3})
    assert (source, key) == ("overrides", "server.port") and "got -3" in message
    assert one_problem("", overrides={"access_key": 5})[:2] == ("overrides", "access_key")
    assert one_problem("", overrides={"event_handlers": "chat=http://h"})[:2] == ("overrides", "event_handlers")
    assert one_problem("", overrides={"event_handlers": [("chat",)]})[:2] == ("overrides", "event_handlers[0]")
    handler = EventHandlerConfig(url_template="http://h")
    assert one_problem("", overrides={"event_handlers": [("9", handler)]})[:2] == ("overrides", "event_handlers[0]")
    assert one_problem("", overrides={"event_handlers": [("chat", "http://h")]})[:2] == ("overrides", "event_handlers[0]")


def test_override_event_handlers_are_appended():
    flag_hub, flag_handler = parse_event_handler_flag("Chat=http://127.0.0.1:4000/{hub}/{event}")
    _, other_handler = parse_event_handler_flag("news=http://127.0.0.1:5000/{event}")
    config = load(BRIEF_EXAMPLE, overrides={"event_handlers": [(flag_hub, flag_handler), ("news", other_handler)]})
    chat = config.hub("chat")
    assert [h.url_template for h in chat.event_handlers] == [
        "http://127.0.0.1:3000/eventhandler/{event}",
        "http://127.0.0.1:4000/{hub}/{event}",
    ]
    assert set(config.hubs) == {"chat", "news"}  # appended to the existing hub despite the case
    assert config.hub("news").event_handlers == (other_handler,)
    assert config.hub("news").anonymous_connect is False


# ------------------------------------------------------------------------- the CLI flag


def test_parse_event_handler_flag():
    hub, handler = parse_event_handler_flag("chat=http://127.0.0.1:3000/eventhandler/{event}?a=b=c")
    assert hub == "chat"
    assert handler.url_template == "http://127.0.0.1:3000/eventhandler/{event}?a=b=c"
    assert handler.user_event_pattern == "*" and handler.system_events == SYSTEM_EVENTS


@pytest.mark.parametrize(
    "value,expected",
    [
        ("chat", "expected HUB=URL_TEMPLATE"),
        ("=http://h", "expected HUB=URL_TEMPLATE"),
        ("chat=", "expected HUB=URL_TEMPLATE"),
        ("1chat=http://h", "invalid hub name"),
        ("chat=ftp://h", "http://, https:// or tunnel:///"),
        ("chat=http://{hub}/x", "host part"),
    ],
)
def test_bad_event_handler_flags(value, expected):
    with pytest.raises(ConfigError) as info:
        parse_event_handler_flag(value)
    assert info.value.source == "--event-handler"
    assert expected in str(info.value)
    assert str(info.value).startswith("--event-handler: ")


# --------------------------------------------------------------------- direct construction


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError) as info:
        ServerConfig(port=-1, slow_consumer="wait")
    assert {p.key for p in info.value.problems} == {"port", "slow_consumer"}
    with pytest.raises(ConfigError, match="event_handlers"):
        HubConfig(event_handlers=("http://h",))
    with pytest.raises(ConfigError, match="url_template"):
        EventHandlerConfig(url_template="nope")
    with pytest.raises(ConfigError, match="invalid hub name"):
        FabricConfig(hubs={"1x": HubConfig()})
    with pytest.raises(ConfigError, match="expected a HubConfig"):
        FabricConfig(hubs={"x": {}})
    assert attrs.evolve(ServerConfig(), port=0).port == 0


def test_config_objects_are_immutable():
    config = load(BRIEF_EXAMPLE)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.hubs["new"] = HubConfig()  # type: ignore[index]


# ------------------------------------------------------------------------------ properties


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_document(data: dict) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in data.items())


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | _text
_keys = st.sampled_from(
    ["server", "hubs", "chat", "port", "host", "access_keys", "event_handlers", "url_template", "system_events",
     "user_event_pattern", "anonymous_connect", "slow_consumer", "idle_timeout", "max_message_bytes"]
) | _text
_values = st.recursive(
    _scalars.filter(lambda v: v is not None),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
def test_any_toml_document_loads_or_raises_config_error(document):
    try:
        load(toml_document(document))
    except ConfigError as err:
        assert err.problems and all(p.message for p in err.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_garbage_text_loads_or_raises_config_error(text):
    try:
        loads_config(text, env={})
    except ConfigError as err:
        assert str(err)


_env_names = st.sampled_from(
    ["FABRIC_HOST", "FABRIC_PORT", "FABRIC_ACCESS_KEY", "FABRIC_ACCESS_KEYS", "FABRIC_MAX_MESSAGE_BYTES",
     "FABRIC_IDLE_TIMEOUT", "FABRIC_SLOW_CONSUMER", "FABRIC_PUBLIC_ENDPOINT", "FABRIC_OTHER"]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_env_names, st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), max_size=5))
def test_any_environment_loads_or_raises_config_error_naming_a_variable(env):
    try:
        load("", env=env)
    except ConfigError as err:
        assert all(p.source and p.source.startswith("environment variable") for p in err.problems)


_server_values = st.fixed_dictionaries(
    {},
    optional={
        "host": st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "localhost", "fabric.internal"]),
        "port": st.integers(0, 65535),
        "access_keys": st.lists(st.text("abcXYZ0123-_=+/", min_size=1, max_size=20), max_size=4),
        "max_message_bytes": st.integers(1, 1024),
        "outbox_max_messages": st.integers(1, 10_000),
        "slow_consumer": st.sampled_from(["close", "drop"]),
        "keepalive_interval": st.floats(0.001, 60),
        "shutdown_timeout": st.floats(0, 3600),
    },
)
_handler_values = st.fixed_dictionaries(
    {"url_template": st.sampled_from(["http://h/{event}", "https://h:1/{hub}/x?code=1", "http://127.0.0.1:3000"])},
    optional={
        "user_event_pattern": st.sampled_from(["*", "", "a", "a,b"]),
        "system_events": st.lists(st.sampled_from(SYSTEM_EVENTS), unique=True),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    _server_values,
    st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True),
        st.fixed_dictionaries({}, optional={"anonymous_connect": st.booleans(),
                                            "event_handlers": st.lists(_handler_values, max_size=3)}),
        max_size=3,
    ).filter(lambda hubs: len({h.lower() for h in hubs}) == len(hubs)),
)
def test_valid_documents_round_trip(server, hubs):
    config = load(toml_document({"server": server, "hubs": hubs}))
    for key, value in server.items():
        got = getattr(config.server, key)
        assert got == (tuple(dict.fromkeys(value)) if key == "access_keys" else value)
    assert set(config.hubs) == set(hubs)
    for name, table in hubs.items():
        hub = config.hub(name)
        assert hub.anonymous_connect == table.get("anonymous_connect", False)
        assert [h.url_template for h in hub.event_handlers] == [h["url_template"] for h in table.get("event_handlers", [])]


def test_azure_limits_profile_applies_azures_reliable_buffer_count():
    assert load('[server]\nlimits = "azure"\n').server.reliable_buffer_count == 1000
    assert load("[server]\n").server.reliable_buffer_count == 65536


def test_event_handler_group_presence_opt_in():
    config = load(
        '[[hubs.chat.event_handlers]]\nurl_template = "http://h/{event}"\n'
        'group_presence_events = ["joined", "left"]\ngroup_filters = ["room-*"]\n'
    )
    handler = config.hub("chat").event_handlers[0]
    assert handler.group_presence_events == ("joined", "left") and handler.group_filters == ("room-*",)
    assert load('[[hubs.chat.event_handlers]]\nurl_template = "http://h"\n').hub("chat").event_handlers[0] \
        .group_presence_events == ()
    with pytest.raises(ConfigError, match="unknown group presence event 'entered'"):
        load('[[hubs.chat.event_handlers]]\nurl_template = "http://h"\ngroup_presence_events = ["entered"]\n')
    with pytest.raises(ConfigError, match="a group filter is 1-1024 characters, got ''"):
        load('[[hubs.chat.event_handlers]]\nurl_template = "http://h"\ngroup_filters = [""]\n')
    with pytest.raises(ConfigError, match="group_filters: expected a list of strings"):
        load('[[hubs.chat.event_handlers]]\nurl_template = "http://h"\ngroup_filters = "room-*"\n')
    # the effective configuration shows the opt-in, and a reload that changes only it says so
    assert config_as_dict(config)["hubs"]["chat"]["event_handlers"][0] | {"url_template": ""} == {
        "url_template": "", "user_event_pattern": "*", "system_events": [],
        "group_presence_events": ["joined", "left"], "group_filters": ["room-*"]}
    without = load('[[hubs.chat.event_handlers]]\nurl_template = "http://h/{event}"\n')
    assert plan_reload(without, config).applied == ("hubs.chat.event_handlers",)


@pytest.mark.parametrize(("filters", "message"), [
    ('["room\\\\"]', r"group filter 'room\\\\' ends with a lone backslash"),
    ('["a\\\\.b"]', r"has the escape '\\.'; only"),
    ('["*.*.*.*.**"]', r"has 6 '\*'; at most 5 \('\*\*' counts two\)"),
    ('["' + "x" * 1025 + '"]', "a group filter is 1-1024 characters"),
    ("[" + ", ".join(f'"g{i}"' for i in range(65)) + "]", "at most 64 group filters per handler, got 65"),
])
def test_bad_group_filters_are_config_errors(filters, message):
    """A filter that would not compile is refused when the file loads, not when a connection
    joins a group (the webhook compiles filters on the first presence event)."""
    with pytest.raises(ConfigError, match=message) as info:
        load(f'[[hubs.chat.event_handlers]]\nurl_template = "http://h"\ngroup_filters = {filters}\n')
    assert info.value.problems[0].key == "hubs.chat.event_handlers[0].group_filters"


@settings(max_examples=500)
@given(st.text(alphabet="ab.*?\\", max_size=14))
def test_group_filters_accept_exactly_the_wildcard_group_patterns(pattern):
    from fabric.core.permissions import compile_group_pattern

    try:
        compile_group_pattern(pattern)
    except ValueError:
        compiles = False
    else:
        compiles = True
    try:
        EventHandlerConfig("http://h", group_filters=(pattern,))
    except ConfigError:
        accepted = False
    else:
        accepted = True
    assert accepted == compiles, pattern
