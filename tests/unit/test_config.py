"""Unit tests for tierstore.config.load_config and its value parsers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tierstore.config import Config, load_config, parse_duration, parse_size
from tierstore.errors import ConfigError

DIM4 = {"dim": 4}


def cfg(**kw):
    """load_config with a hermetic (empty) environment."""
    kw.setdefault("env", {})
    return load_config(**kw)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and basic building --------------------------------------------------------------------


def test_defaults():
    c = cfg(store=DIM4)
    assert isinstance(c, Config)
    assert c.store.dim == 4
    assert c.store.metric == "cosine"
    assert c.hot.capacity == 100_000
    assert c.hot.redis_url is None
    assert c.hot.backend == "auto"  # search when the server has the module, else vector sets
    assert c.hot.quantization == "q8"
    assert c.warm.code == "int8"
    assert c.cold.enabled is True
    assert c.cold.cache_size == 2 * 1024**3
    assert c.policy.half_life == "auto"  # issue 18: tuned by the policy
    assert c.policy.ingest_tier == "hot"
    assert dict(c.schema) == {}
    assert c.source is None
    assert Path(c.store.path).is_absolute()


def test_to_dict_shape():
    c = cfg(store=DIM4, schema={"cat": "tag"})
    d = c.to_dict()
    assert set(d) == {"store", "hot", "warm", "cold", "policy", "metrics", "schema"}
    assert d["store"]["dim"] == 4
    assert d["schema"] == {"cat": "tag"}
    assert d["hot"]["capacity"] == 100_000


def test_config_roundtrip_through_load_config():
    c = cfg(store=DIM4, hot={"capacity": 7}, schema={"cat": "tag", "price": "numeric"})
    again = cfg(source=c)
    assert again == c
    changed = cfg(source=c, hot={"capacity": 9})
    assert changed.hot.capacity == 9
    assert changed.schema == c.schema


def test_direct_store_keywords():
    c = cfg(dim=8, metric="L2")
    assert c.store.dim == 8
    assert c.store.metric == "l2"  # case-insensitive choices, normalised


def test_none_keyword_is_ignored():
    c = cfg(store=DIM4, hot=None, path=None)
    assert c.hot.capacity == 100_000


# --- precedence: file/dict < env < keywords -------------------------------------------------------


def test_dict_source():
    c = cfg(source={"store": {"dim": 3, "metric": "ip"}, "hot": {"capacity": 5}})
    assert (c.store.dim, c.store.metric, c.hot.capacity) == (3, "ip", 5)


def test_precedence_file_env_keyword(tmp_path):
    f = write(
        tmp_path / "ts.toml",
        "[store]\ndim = 4\n[hot]\ncapacity = 10\nm = 8\nef_runtime = 20\n[warm]\nef = 11\n",
    )
    env = {"TIERSTORE_HOT_CAPACITY": "20", "TIERSTORE_HOT_M": "12"}
    c = load_config(f, env=env, hot={"capacity": 30})
    assert c.hot.capacity == 30  # keyword beats env beats file
    assert c.hot.m == 12  # env beats file
    assert c.hot.ef_runtime == 20  # file only
    assert c.warm.ef == 11
    assert c.source == str(f)


def test_precedence_dict_env_keyword():
    src = {"store": {"dim": 4}, "policy": {"half_life": "1h", "interval": 5}}
    c = load_config(src, env={"TIERSTORE_POLICY_HALF_LIFE": "2h"})
    assert c.policy.half_life == 7200.0
    assert c.policy.interval == 5.0
    c = load_config(src, env={"TIERSTORE_POLICY_HALF_LIFE": "2h"}, policy={"half_life": 10})
    assert c.policy.half_life == 10.0


def test_keyword_override_merges_with_section_from_file(tmp_path):
    f = write(tmp_path / "ts.toml", "[store]\ndim = 4\n[hot]\ncapacity = 10\nm = 8\n")
    c = load_config(f, env={}, hot={"capacity": 1})
    assert (c.hot.capacity, c.hot.m) == (1, 8)


def test_env_overrides_parse_strings():
    env = {
        "TIERSTORE_STORE_DIM": "16",
        "TIERSTORE_STORE_METRIC": "ip",
        "TIERSTORE_HOT_EF_RUNTIME": "128",  # key with an underscore
        "TIERSTORE_COLD_ENABLED": "false",
        "TIERSTORE_COLD_CACHE_SIZE": "512MB",
        "TIERSTORE_WARM_COMPACT_THRESHOLD": "0.5",
        "TIERSTORE_SCHEMA_cat": "tag",
        "TIERSTORE_CONFIG": "/nonexistent/ignored.toml",  # names the file, not a setting
        "UNRELATED": "x",
    }
    c = load_config(env=env)
    assert c.store.dim == 16
    assert c.store.metric == "ip"
    assert c.hot.ef_runtime == 128
    assert c.cold.enabled is False
    assert c.cold.cache_size == 512_000_000
    assert c.warm.compact_threshold == 0.5
    assert dict(c.schema) == {"cat": "tag"}


def test_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("TIERSTORE_HOT_CAPACITY", "77")
    c = load_config(store=DIM4)
    assert c.hot.capacity == 77
    # an explicit env replaces os.environ entirely
    assert load_config(store=DIM4, env={}).hot.capacity == 100_000


def test_env_unknown_section():
    with pytest.raises(
        ConfigError, match=r"TIERSTORE_HOTT_CAPACITY: unknown section 'hott'.*did you mean 'hot'"
    ):
        cfg(store=DIM4, env={"TIERSTORE_HOTT_CAPACITY": "5"})


def test_env_unknown_key():
    with pytest.raises(ConfigError, match=r"^hot\.capasity: unknown key \(did you mean 'capacity'\?\)$"):
        cfg(store=DIM4, env={"TIERSTORE_HOT_CAPASITY": "5"})


def test_env_without_key():
    with pytest.raises(ConfigError, match=r"TIERSTORE_HOT: expected TIERSTORE_<SECTION>_<KEY>"):
        cfg(store=DIM4, env={"TIERSTORE_HOT": "5"})


def test_env_bad_value_names_key():
    with pytest.raises(ConfigError, match=r"^hot\.capacity: 'many' is not allowed: must be an integer >= 0$"):
        cfg(store=DIM4, env={"TIERSTORE_HOT_CAPACITY": "many"})


# --- errors naming the key path ------------------------------------------------------------------


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match=r"^hot\.capasity: unknown key \(did you mean 'capacity'\?\)$"):
        cfg(store=DIM4, hot={"capasity": 1})


def test_unknown_key_without_close_match_lists_known_keys():
    with pytest.raises(ConfigError, match=r"^store\.zzzzzz: unknown key \(known keys: dim, metric, name, path, repeat_cache\)$"):
        cfg(store={"dim": 4, "zzzzzz": 1})


def test_unknown_section_in_dict():
    with pytest.raises(ConfigError, match=r"^hott: unknown section \(did you mean 'hot'\?\)$"):
        cfg(source={"store": DIM4, "hott": {"capacity": 1}})


def test_unknown_section_in_file(tmp_path):
    f = write(tmp_path / "c.toml", "[store]\ndim = 4\n[polcy]\nhalf_life = 1\n")
    with pytest.raises(ConfigError, match=r"^polcy: unknown section \(did you mean 'policy'\?\)"):
        load_config(f, env={})


def test_unknown_keyword_option():
    with pytest.raises(ConfigError, match=r"^dimm: unknown option \(did you mean 'dim'\?\)"):
        cfg(dimm=4)


def test_keyword_section_must_be_dict():
    with pytest.raises(ConfigError, match=r"^hot: keyword override must be a dict"):
        cfg(store=DIM4, hot=5)


def test_section_must_be_table():
    with pytest.raises(ConfigError, match=r"^hot: must be a table of keys, got 5"):
        cfg(source={"store": DIM4, "hot": 5})
    with pytest.raises(ConfigError, match=r"^schema: must be a table"):
        cfg(source={"store": DIM4, "schema": ["cat"]})


@pytest.mark.parametrize(
    ("section", "key", "value", "pattern"),
    [
        ("hot", "capacity", "lots", r"hot\.capacity: 'lots' is not allowed: must be an integer >= 0"),
        ("hot", "capacity", 1.5, r"hot\.capacity: 1\.5 is not allowed: must be an integer"),
        ("hot", "capacity", True, r"hot\.capacity: True is not allowed"),
        ("hot", "capacity", [1], r"hot\.capacity: \[1\] is not allowed"),
        ("hot", "capacity", None, r"hot\.capacity: None is not allowed"),
        ("hot", "redis_url", 5, r"hot\.redis_url: 5 is not allowed: must be a string"),
        ("store", "path", 5, r"store\.path: 5 is not allowed: must be a string"),
        ("cold", "enabled", "maybe", r"cold\.enabled: 'maybe' is not allowed: must be true or false"),
        ("cold", "enabled", 1, r"cold\.enabled: 1 is not allowed: must be true or false"),
        (
            "warm",
            "compact_threshold",
            "half",
            r"warm\.compact_threshold: 'half' is not allowed: must be a number",
        ),
        ("warm", "compact_threshold", "nan", r"warm\.compact_threshold: 'nan' is not allowed"),
        ("warm", "code", "int4", r"warm\.code: 'int4' is not allowed: must be one of 'int8'"),
        ("hot", "backend", 3, r"hot\.backend: 3 is not allowed: must be one of"),
        ("hot", "backend", "vectorsets", r"hot\.backend: 'vectorsets' is not allowed: must be one of 'auto', "
                                         r"'search', 'vectorset'"),
        ("hot", "quantization", "int8", r"hot\.quantization: 'int8' is not allowed: must be one of 'q8', "
                                        r"'noquant', 'bin'"),
        ("hot", "cluster", "sometimes", r"hot\.cluster: 'sometimes' is not allowed: must be true, false or \"auto\""),
        ("hot", "cluster", 2, r"hot\.cluster: 2 is not allowed"),
        ("hot", "vector_type", "bfloat16", r"hot\.vector_type: 'bfloat16' is not allowed: must be one of 'float32', "
                                           r"'float16'"),
        ("policy", "half_life", "soon", r"policy\.half_life: 'soon' is not allowed: must be a duration"),
        ("cold", "cache_size", "lots", r"cold\.cache_size: 'lots' is not allowed: must be a size"),
    ],
)
def test_bad_value_types(section, key, value, pattern):
    sections = {section: {key: value}} if section != "store" else {"store": {**DIM4, key: value}}
    sections.setdefault("store", DIM4)
    with pytest.raises(ConfigError, match="^" + pattern):
        cfg(**sections)


@pytest.mark.parametrize(
    ("section", "key", "value", "pattern"),
    [
        ("hot", "capacity", -5, r"hot\.capacity: -5 is not allowed: must be an integer >= 0$"),
        ("hot", "m", 1, r"hot\.m: 1 is not allowed: must be an integer >= 2 and <= 512$"),
        ("hot", "m", 513, r"hot\.m: 513 is not allowed: must be an integer >= 2 and <= 512$"),
        (
            "hot",
            "ef_runtime",
            0,
            r"hot\.ef_runtime: 0 is not allowed: must be an integer >= 1 and <= 100000$",
        ),
        ("cold", "max_attempts", 21, r"cold\.max_attempts: 21 is not allowed"),
        ("warm", "segment_size", 0, r"warm\.segment_size: 0 is not allowed: must be an integer >= 1$"),
        (
            "warm",
            "compact_threshold",
            1.5,
            r"warm\.compact_threshold: 1\.5 is not allowed: must be a number >= 0\.0 and <= 1\.0",
        ),
        ("policy", "hysteresis", -0.1, r"policy\.hysteresis: -0\.1 is not allowed"),
    ],
)
def test_out_of_range(section, key, value, pattern):
    with pytest.raises(ConfigError, match="^" + pattern):
        cfg(store=DIM4, **{section: {key: value}})


def test_store_dim_range():
    with pytest.raises(
        ConfigError, match=r"^store\.dim: 0 is not allowed: must be an integer >= 1 and <= 65536"
    ):
        cfg(store={"dim": 0})
    with pytest.raises(ConfigError, match=r"^store\.dim: 65537 is not allowed"):
        cfg(dim=65537)
    assert cfg(dim=65536).store.dim == 65536
    assert cfg(dim="1_024").store.dim == 1024
    assert cfg(dim=8.0).store.dim == 8


def test_int_edge_values_accepted():
    c = cfg(store=DIM4, hot={"capacity": 0, "m": "512", "ef_runtime": " +7 "})
    assert (c.hot.capacity, c.hot.m, c.hot.ef_runtime) == (0, 512, 7)


def test_bool_strings():
    for text, want in [("on", True), ("YES", True), ("1", True), ("off", False), ("No", False), ("0", False)]:
        assert cfg(store=DIM4, cold={"enabled": text}).cold.enabled is want


def test_optional_string_blank_is_none():
    c = cfg(store=DIM4, hot={"redis_url": "  ", "prefix": "p:"})
    assert c.hot.redis_url is None
    assert c.hot.prefix == "p:"


def test_bad_metric():
    with pytest.raises(
        ConfigError, match=r"^store\.metric: 'dot' is not allowed: must be one of 'cosine', 'ip', 'l2'$"
    ):
        cfg(store={"dim": 4, "metric": "dot"})


def test_missing_dim():
    with pytest.raises(ConfigError, match=r"^store\.dim: missing"):
        cfg()
    with pytest.raises(ConfigError, match=r"^store\.dim: missing"):
        cfg(store={"metric": "l2"})


def test_missing_dim_in_file(tmp_path):
    f = write(tmp_path / "c.toml", '[store]\nmetric = "l2"\n')
    with pytest.raises(ConfigError, match=r"^store\.dim: missing"):
        load_config(f, env={})
    # ...but an env var can supply it
    assert load_config(f, env={"TIERSTORE_STORE_DIM": "5"}).store.dim == 5


# --- schema -------------------------------------------------------------------------------------


def test_schema_ok():
    c = cfg(store=DIM4, schema={"cat": "TAG", "_price2": "numeric", "a" * 64: "tag"})
    assert dict(c.schema) == {"cat": "tag", "_price2": "numeric", "a" * 64: "tag"}


@pytest.mark.parametrize("name", ["1bad", "has-dash", "has space", "", "__reserved", "a" * 65, "é"])
def test_schema_bad_field_name(name):
    with pytest.raises(ConfigError, match=r"^schema\..*: bad field name"):
        cfg(store=DIM4, schema={name: "tag"})


def test_schema_non_str_field_name():
    with pytest.raises(ConfigError, match=r"^schema\.5: bad field name"):
        cfg(source={"store": DIM4, "schema": {5: "tag"}})


@pytest.mark.parametrize("kind", ["text", "vector", 1, None, ["tag"]])
def test_schema_bad_field_type(kind):
    with pytest.raises(
        ConfigError, match=r"^schema\.cat: .* is not allowed: must be one of 'tag', 'numeric'$"
    ):
        cfg(store=DIM4, schema={"cat": kind})


def test_schema_in_file(tmp_path):
    f = write(tmp_path / "c.toml", '[store]\ndim = 2\n[schema]\ncategory = "tag"\nprice = "numeric"\n')
    c = load_config(f, env={})
    assert dict(c.schema) == {"category": "tag", "price": "numeric"}


# --- files ---------------------------------------------------------------------------------------


def test_invalid_toml(tmp_path):
    f = write(tmp_path / "bad.toml", "[store\ndim = 4\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad\.toml' is not valid TOML"):
        load_config(f, env={})


def test_invalid_toml_duplicate_key(tmp_path):
    f = write(tmp_path / "dup.toml", "[store]\ndim = 4\ndim = 5\n")
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_config(f, env={})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope\.toml' does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_file_not_utf8_is_config_error(tmp_path):
    """TOML must be UTF-8; a file that is not should be reported as an invalid config file,
    not leak a bare UnicodeDecodeError (tomllib.load decodes before parsing)."""
    f = tmp_path / "latin1.toml"
    f.write_bytes(b'[store]\ndim = 4\npath = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1\.toml"):
        load_config(f, env={})


def test_directory_as_config_file_is_config_error(tmp_path):
    """Passing a directory (a common slip: the store dir instead of its config file) should be a
    ConfigError naming the path, not a bare IsADirectoryError."""
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_config(tmp_path, env={})


def test_relative_store_path_resolved_against_file_dir(tmp_path, monkeypatch):
    conf_dir = tmp_path / "conf"
    f = write(conf_dir / "ts.toml", '[store]\ndim = 4\npath = "data/store"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load_config(f, env={})
    assert c.store.path == str((conf_dir / "data" / "store").resolve())
    # a relative *file* path works too, and still resolves against the file's directory
    monkeypatch.chdir(tmp_path)
    c = load_config("conf/ts.toml", env={})
    assert c.store.path == str((conf_dir / "data" / "store").resolve())


def test_default_store_path_in_file_resolves_against_file_dir(tmp_path, monkeypatch):
    f = write(tmp_path / "conf" / "ts.toml", "[store]\ndim = 4\n")
    monkeypatch.chdir(tmp_path)
    c = load_config(f, env={})
    assert c.store.path == str((tmp_path / "conf" / "tierstore-data").resolve())


def test_relative_store_path_without_file_resolves_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = cfg(store={"dim": 4, "path": "rel/dir"})
    assert c.store.path == str((tmp_path / "rel" / "dir").resolve())


def test_absolute_store_path_kept(tmp_path):
    f = write(tmp_path / "conf" / "ts.toml", f'[store]\ndim = 4\npath = "{tmp_path / "abs"}"\n')
    assert load_config(f, env={}).store.path == str((tmp_path / "abs").resolve())


def test_store_path_user_expansion(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    c = cfg(store={"dim": 4, "path": "~/vecs"})
    assert c.store.path == str((tmp_path / "vecs").resolve())


def test_file_with_every_section(tmp_path):
    f = write(
        tmp_path / "full.toml",
        """
[store]
dim = 384
metric = "ip"
[hot]
redis_url = "redis://localhost:6379/0"
backend = "SEARCH"
socket_timeout = "2s"
[warm]
code = "int8"
[cold]
url = "s3://my-bucket/prefix/x"
endpoint_url = "http://localhost:9000"
cache_size = "1GiB"
timeout = "1500ms"
[policy]
half_life = "1d"
interval = "30s"
grace_period = "10m"
ingest_tier = "warm"
[schema]
category = "tag"
""",
    )
    c = load_config(f, env={})
    assert c.store.metric == "ip"
    assert c.hot.redis_url == "redis://localhost:6379/0"
    assert c.hot.backend == "search"
    assert c.hot.socket_timeout == 2.0
    assert c.warm.code == "int8"
    assert c.cold.url == "s3://my-bucket/prefix/x"
    assert c.cold.cache_size == 1024**3
    assert c.cold.timeout == 1.5
    assert c.policy.half_life == 86400.0
    assert c.policy.grace_period == 600.0
    assert c.policy.ingest_tier == "warm"


# --- cold.url and cross-field checks ---------------------------------------------------------------


@pytest.mark.parametrize("url", ["s3://bucket", "s3://my.bucket-1/some/prefix", "s3://abc/", "s3://a1b"])
def test_cold_url_ok(url):
    assert cfg(store=DIM4, cold={"url": url}).cold.url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://bucket",
        "bucket",
        "s3://",
        "s3://ab",
        "s3://Bucket",
        "s3://-bucket",
        "s3://bucket-",
        "s3://b_c",
    ],
)
def test_cold_url_bad(url):
    with pytest.raises(ConfigError, match=r"^cold\.url: .* is not allowed: must look like 's3://bucket'"):
        cfg(store=DIM4, cold={"url": url})


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis//x", "the scheme must be redis://, rediss:// or unix://"),
        ("http://x", "the scheme must be redis://, rediss:// or unix://"),
        ("localhost:6379", "the scheme must be redis://, rediss:// or unix://"),
        ("redis://host:notaport", "port 'notaport' is not a number in 1..65535"),
        ("redis://host:99999", "port '99999' is not a number in 1..65535"),
        ("redis://host:0", "port '0' is not a number in 1..65535"),
        ("redis://", "no host"),
        ("redis:///0", "no host"),
        ("redis://host/abc", "the path '/abc' must be a database number"),
        ("unix://", "a unix:// URL needs the socket's path"),
        ("redis://host:6379/0?socket_timeout=abc", "Invalid value for 'socket_timeout'"),
    ],
)
def test_redis_url_bad(url, why):
    """A malformed hot.redis_url is a ConfigError naming the key (was redis-py's ValueError at open,
    or for a bad db path a silent db 0)."""
    with pytest.raises(ConfigError, match=r"^hot\.redis_url: .* is not allowed: " + re.escape(why)):
        cfg(store=DIM4, hot={"redis_url": url})
    with pytest.raises(ConfigError, match=r"^hot\.redis_url: "):
        cfg(store=DIM4, env={"TIERSTORE_HOT_REDIS_URL": url})


@pytest.mark.parametrize("url", ["redis://localhost:6379/0", "redis://127.0.0.1", "rediss://u:p@h.example:6380/2",
                                 "redis://[::1]:6379", "unix:///tmp/redis.sock?db=0", "redis://h:6379/0?protocol=3"])
def test_redis_url_ok(url):
    assert cfg(store=DIM4, hot={"redis_url": url}).hot.redis_url == url
    assert cfg(store=DIM4, hot={"redis_url": f"  {url} "}).hot.redis_url == url


def test_redis_url_error_hides_the_password():
    with pytest.raises(ConfigError) as err:
        cfg(store=DIM4, hot={"redis_url": "redis://app:s3cret@host:port/0"})
    assert "s3cret" not in str(err.value) and "redis://app:***@host:port/0" in str(err.value)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("localhost:8333", "the scheme must be http:// or https://"),
        ("ftp://x", "the scheme must be http:// or https://"),
        ("http://", "no host"),
        ("http://x:notaport", "port 'notaport' is not a number in 1..65535"),
        ("http://127.0.0.1:99999", "port '99999' is not a number in 1..65535"),
        ("http://a b", "it holds a space"),
    ],
)
def test_cold_endpoint_url_bad(url, why):
    with pytest.raises(ConfigError, match=r"^cold\.endpoint_url: .* is not allowed: " + re.escape(why)):
        cfg(store=DIM4, cold={"endpoint_url": url})


@pytest.mark.parametrize("url", ["http://127.0.0.1:8333", "https://s3.eu-west-1.amazonaws.com", "http://minio/"])
def test_cold_endpoint_url_ok(url):
    assert cfg(store=DIM4, cold={"endpoint_url": url}).cold.endpoint_url == url


def test_ingest_cold_requires_cold_enabled():
    with pytest.raises(
        ConfigError, match=r"^policy\.ingest_tier: 'cold' is not allowed: cold tier is disabled"
    ):
        cfg(store=DIM4, cold={"enabled": False}, policy={"ingest_tier": "cold"})
    assert cfg(store=DIM4, policy={"ingest_tier": "cold"}).policy.ingest_tier == "cold"


# --- durations and sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("1h", 3600.0),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("2min", 120.0),
        ("2d", 172800.0),
        (" 1.5H ", 5400.0),
        ("10", 10.0),
        ("0", 0.0),
        ("0.5 s", 0.5),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value, "x.y") == seconds
    got = cfg(store=DIM4, policy={"half_life": value}).policy.half_life
    assert isinstance(got, float)
    assert got == seconds


@pytest.mark.parametrize(
    "value", ["-1s", -1, -0.5, "1 week", "1e3", "", "s", "1h30m", True, None, float("inf"), float("nan"), [1]]
)
def test_bad_durations(value):
    with pytest.raises(ConfigError, match=r"^policy\.interval: .* is not allowed: must be a duration"):
        cfg(store=DIM4, policy={"interval": value})


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        ("2GiB", 2 * 1024**3),
        ("512MB", 512_000_000),
        ("512MiB", 512 * 1024**2),
        ("100k", 100_000),
        ("1.5KiB", 1536),
        ("10 GB", 10_000_000_000),
        ("1tb", 10**12),
        ("1_000", 1000),
        ("64b", 64),
        ("0", 0),
        (4096, 4096),
        (0, 0),
    ],
)
def test_sizes(value, nbytes):
    assert parse_size(value, "x.y") == nbytes
    got = cfg(store=DIM4, cold={"cache_size": value}).cold.cache_size
    assert isinstance(got, int)
    assert got == nbytes


@pytest.mark.parametrize("value", [-1, "-5MB", "2XB", "abc", "", "GB", True, None, [1]])
def test_bad_sizes(value):
    with pytest.raises(ConfigError, match=r"^cold\.cache_size: .* is not allowed: must be a size"):
        cfg(store=DIM4, cold={"cache_size": value})


def test_huge_integer_duration_in_file_is_config_error(tmp_path):
    """TOML integers are unbounded in tomllib; parse_duration calls math.isfinite(int) which raises
    OverflowError for ints beyond float range instead of a ConfigError naming the key."""
    f = write(tmp_path / "c.toml", "[store]\ndim = 4\n[policy]\nhalf_life = 1" + "0" * 400 + "\n")
    with pytest.raises(ConfigError, match=r"^policy\.half_life: "):
        load_config(f, env={})


def test_huge_integer_float_setting_in_file_is_config_error(tmp_path):
    """Same for parse_float: float(10**400) raises OverflowError, which it does not catch."""
    f = write(tmp_path / "c.toml", "[store]\ndim = 4\n[warm]\ncompact_threshold = 1" + "0" * 400 + "\n")
    with pytest.raises(ConfigError, match=r"^warm\.compact_threshold: "):
        load_config(f, env={})


def test_config_is_frozen():
    c = cfg(store=DIM4)
    with pytest.raises(AttributeError):
        c.store.dim = 5  # type: ignore[misc]


def test_load_config_accepts_pathlike(tmp_path):
    f = write(tmp_path / "c.toml", "[store]\ndim = 4\n")
    assert load_config(os.fspath(f), env={}).store.dim == 4
    assert load_config(f, env={}).store.dim == 4


# --- policy pins and byte budgets ------------------------------------------------------------------


def test_pin_filters_are_validated_against_the_schema(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[store]\ndim = 4\n[schema]\ntenant = "tag"\n[policy]\npin_hot = {tenant = "acme"}\n')
    assert load_config(cfg, env={}).policy.pin_hot == {"tenant": "acme"}
    cfg.write_text('[store]\ndim = 4\n[schema]\ntenant = "tag"\n[policy]\npin_hot = {tenat = "acme"}\n')
    with pytest.raises(ConfigError, match=r"policy\.pin_hot: .*tenat.*not declared"):
        load_config(cfg, env={})
    with pytest.raises(ConfigError, match=r"policy\.pin_warm: .*non-empty filter table"):
        load_config(store={"dim": 4}, policy={"pin_warm": 5}, env={})
    with pytest.raises(ConfigError, match=r"policy\.pin_cold: .*cold tier is disabled"):
        load_config(store={"dim": 4}, schema={"t": "tag"}, cold={"enabled": False}, policy={"pin_cold": {"t": "x"}}, env={})


def test_pin_filter_from_environment_is_json():
    env = {"TIERSTORE_POLICY_PIN_HOT": '{"tenant": {"$in": ["a", "b"]}}'}
    c = load_config(store={"dim": 4}, schema={"tenant": "tag"}, env=env)
    assert c.policy.pin_hot == {"tenant": {"$in": ["a", "b"]}}
    with pytest.raises(ConfigError, match=r"policy\.pin_hot"):
        load_config(store={"dim": 4}, schema={"tenant": "tag"}, env={"TIERSTORE_POLICY_PIN_HOT": "{tenant"})


def test_policy_keys_and_byte_budgets():
    c = load_config(store={"dim": 4}, hot={"capacity_bytes": "1GiB"}, warm={"capacity_bytes": "10GB"},
                    policy={"batch_size": 100, "hit_window": 50, "grace_period": "2m"}, env={})
    assert c.hot.capacity_bytes == 2**30 and c.warm.capacity_bytes == 10**10
    assert (c.policy.batch_size, c.policy.hit_window, c.policy.grace_period) == (100, 50, 120.0)
    with pytest.raises(ConfigError, match=r"policy\.batch_size"):
        load_config(store={"dim": 4}, policy={"batch_size": 0}, env={})


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_vectorset_backend_needs_cosine(metric):
    with pytest.raises(ConfigError, match=r"^hot\.backend: 'vectorset' is not allowed: vector sets only support "
                                          r"store\.metric = 'cosine'"):
        cfg(store={**DIM4, "metric": metric}, hot={"backend": "vectorset"})
    c = cfg(store={**DIM4, "metric": metric}, hot={"backend": "auto", "quantization": "NoQuant"})
    assert (c.hot.backend, c.hot.quantization) == ("auto", "noquant")  # auto decides at open


def test_hot_cluster_is_auto_true_or_false():
    assert cfg(store=DIM4).hot.cluster is None  # detected at open
    assert cfg(store=DIM4, hot={"cluster": "auto"}).hot.cluster is None
    assert cfg(store=DIM4, hot={"cluster": True}).hot.cluster is True
    assert cfg(store=DIM4, hot={"cluster": "false"}).hot.cluster is False
    assert cfg(store=DIM4, hot={"vector_type": "float16"}).hot.vector_type == "float16"
    assert cfg(store=DIM4).hot.vector_type == "float32"
