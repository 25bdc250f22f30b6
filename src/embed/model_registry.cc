// ModelRegistry: installed models under <home>/models, the built-in list of
// known models, import from a file and download with cpp-httplib.
//
// Install order: the model file first, card.json last (both written
// atomically), so a directory without a readable card is never a model and a
// crash mid-install leaves nothing that Find would return.
#include "pixseek/model_registry.h"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "core/files.h"
#include "core/hash.h"

namespace pixseek {
namespace fs = std::filesystem;
namespace {

constexpr char kCardFile[] = "card.json";

// An ImageNet classifier from the ONNX Model Zoo, preprocessed as the Zoo's
// READMEs give it: shorter side to 256, centre crop 224, RGB in [0,1]
// normalised by the ImageNet mean and std; pooled and L2-normalised.
ModelCard ImageNetOnnxCard(std::string name, std::string file, std::string sha256) {
  ModelCard card;
  card.name = std::move(name);
  card.runtime = Runtime::kOnnx;
  card.file = std::move(file);
  card.sha256 = std::move(sha256);
  PreprocessSpec& pre = card.preprocess;
  pre.input_width = 224;
  pre.input_height = 224;
  pre.resize_shorter = 256;
  pre.crop = Crop::kCenter;
  pre.interpolation = Interpolation::kBilinear;
  pre.scale = 1.0f / 255.0f;
  pre.mean = {0.485f, 0.456f, 0.406f};
  pre.std = {0.229f, 0.224f, 0.225f};
  pre.channel_order = ChannelOrder::kRgb;
  card.output.pooling = Pooling::kGap;
  card.output.l2_normalize = true;
  return card;
}

ModelCard MobilenetCard() {
  ModelCard card = ImageNetOnnxCard("mobilenetv2", "mobilenetv2-12-int8.onnx",
                                    "83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f");
  // libtorch where this build has it: the int8 graph translated and run in
  // float is 4-6x faster than OpenCV DNN's int8 layers on AVX-512 (about 220
  // against 35-50 images/s on 2 cores) and as good (PACS photo mAP 0.870
  // against 0.866). OpenCV otherwise.
  card.onnx.engine = Engine::kAuto;
  // The last feature map before the classifier. OpenCV 4.6 runs this layer
  // for any batch size, whereas the full net ("output") only for batch 1.
  card.onnx.output_layer = "onnx_node!627_DequantizeLinear";
  card.dimension = 1280;
  // Fastest on both engines (2-core EPYC). OpenCV's int8 layers: 20 ms per
  // image at batch 1, 19 at 4, 25 at 16, 43 at 32. libtorch: 139 images/s at
  // 1, 207-235 at 4, 61-79 at 8 (see KeepFreedMemoryForReuse).
  card.max_batch = 4;
  return card;
}

// The Model Zoo's int8 ResNet-50 v1 (MXNet-trained, quantized by Intel
// Neural Compressor in the same QOperator form as the MobileNetV2 above).
// The embedding is the global average pool's output, the value
// "resnetv17_pool1_fwd_quantized" ([N,2048,1,1]): a value name, which only
// the libtorch engine resolves (OpenCV wants layer names), hence engine
// "libtorch" rather than "auto".
ModelCard Resnet50Int8Card() {
  ModelCard card = ImageNetOnnxCard("resnet50-int8", "resnet50-v1-12-int8.onnx",
                                    "c234f30975989788b4405f25253275aae247ab6dbdd34aaa69ab0a59ff76f6d0");
  card.onnx.engine = Engine::kLibtorch;
  card.onnx.output_layer = "resnetv17_pool1_fwd_quantized";
  card.dimension = 2048;
  card.max_batch = 8;
  return card;
}

// Classical features with no downloaded weights: the "model file" is the
// codebook learned from each collection and kept in its database directory.
ModelCard SiftVladCard() {
  ModelCard card;
  card.name = "sift-vlad";
  card.runtime = Runtime::kSiftVlad;
  card.file = "sift-vlad-codebook.bin";
  // The grey image is shrunk to fit 512 x 512 before SIFT.
  card.preprocess.input_width = 512;
  card.preprocess.input_height = 512;
  card.preprocess.resize_shorter = 512;
  card.preprocess.crop = Crop::kNone;
  card.preprocess.interpolation = Interpolation::kArea;
  card.output.pooling = Pooling::kNone;
  card.dimension = 64 * 128;  // k = 64 centroids of 128-d RootSIFT
  card.output.l2_normalize = true;
  card.max_batch = 16;
  card.sift_vlad.max_keypoints = 1000;
  card.sift_vlad.intra_normalize = true;
  return card;
}

// Names become directory names: keep them boring.
Status ValidateName(const std::string& name) {
  static const std::regex kName("[A-Za-z0-9][A-Za-z0-9._-]{0,63}");
  if (!std::regex_match(name, kName)) {
    return Status::InvalidArgument(
        "invalid model name '" + name +
        "': use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit");
  }
  return Status::Ok();
}

std::string NotInstalledMessage(const std::string& name) {
  return "model '" + name + "' is not installed; run `pixseek model pull " + name +
         "` (needs network) or `pixseek model import FILE`";
}

Result<std::vector<uint8_t>> ReadAllBytes(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Status::NotFound("file " + path.string() + " does not exist");
  if (!fs::is_regular_file(path, ec)) {
    return Status::InvalidArgument(path.string() + " is not a regular file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open " + path.string());
  std::vector<uint8_t> bytes(std::istreambuf_iterator<char>(in), {});
  if (in.bad()) return Status::Internal("cannot read " + path.string());
  return bytes;
}

const KnownModel* FindKnownByName(const std::string& name) {
  for (const KnownModel& m : KnownModels()) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

const KnownModel* FindKnownBySha(const std::string& sha) {
  for (const KnownModel& m : KnownModels()) {
    if (m.sha256 == sha) return &m;
  }
  return nullptr;
}

std::string KnownNames() {
  std::string out;
  for (const KnownModel& m : KnownModels()) {
    if (!out.empty()) out += ", ";
    out += m.name;
  }
  return out;
}

// Removes a file when it goes out of scope unless released.
class FileRemover {
 public:
  explicit FileRemover(fs::path path) : path_(std::move(path)) {}
  ~FileRemover() {
    std::error_code ec;
    if (!path_.empty()) fs::remove(path_, ec);
  }
  FileRemover(const FileRemover&) = delete;
  FileRemover& operator=(const FileRemover&) = delete;

 private:
  fs::path path_;
};

// Downloads `url` into `dest`. Unavailable on any network or HTTP failure.
Status Download(const std::string& url, const fs::path& dest, const DownloadProgress& progress) {
  static const std::regex kUrl(R"(^(https?://[^/?#]+)([/?].*)?$)", std::regex::icase);
  std::smatch m;
  if (!std::regex_match(url, m, kUrl)) {
    return Status::InvalidArgument("cannot download " + url + ": only http:// and https:// URLs");
  }
  const std::string origin = m[1].str();
  std::string path = m[2].matched ? m[2].str() : "/";
  if (path.empty() || path[0] != '/') path = "/" + path;

  std::ofstream out(dest, std::ios::binary | std::ios::trunc);
  if (!out) return Status::Internal("cannot create " + dest.string());

  int http_status = 0;
  uint64_t done = 0;
  bool write_failed = false;
  Status status;
  try {
    httplib::Client client(origin);
    client.set_follow_location(true);
    client.set_connection_timeout(15, 0);
    client.set_read_timeout(60, 0);
    httplib::Result res = client.Get(
        path,
        [&](const httplib::Response& r) {
          http_status = r.status;
          return true;
        },
        [&](const char* data, size_t n) {
          if (http_status != 200) return true;  // an error page: not the model
          out.write(data, static_cast<std::streamsize>(n));
          if (!out) {
            write_failed = true;
            return false;
          }
          done += n;
          return true;
        },
        [&](uint64_t current, uint64_t total) {
          if (progress && http_status == 200) progress(current, total);
          return true;
        });
    if (write_failed) {
      status = Status::Internal("cannot write " + dest.string());
    } else if (!res) {
      status = Status::Unavailable("cannot download " + url + ": " +
                                   httplib::to_string(res.error()));
    } else if (res->status != 200) {
      status = Status::Unavailable("cannot download " + url + ": HTTP " +
                                   std::to_string(res->status));
    }
  } catch (const std::exception& e) {
    status = Status::Unavailable("cannot download " + url + ": " + e.what());
  }
  out.close();
  PIXSEEK_RETURN_IF_ERROR(status);
  if (!out) return Status::Internal("cannot write " + dest.string());
  if (progress) progress(done, done);
  return Status::Ok();
}

}  // namespace

const std::vector<KnownModel>& KnownModels() {
  static const std::vector<KnownModel>* const kModels = [] {
    auto* models = new std::vector<KnownModel>();  // never destroyed: static lifetime
    KnownModel mobilenet;
    mobilenet.name = "mobilenetv2";
    mobilenet.url =
        "https://github.com/onnx/models/raw/main/validated/vision/classification/mobilenet/"
        "model/mobilenetv2-12-int8.onnx";
    mobilenet.sha256 = "83530ad811bc31d2b60a5599a21265a5057608c9b044b4ee758cc22f2309f54f";
    mobilenet.description =
        "MobileNetV2 (ImageNet, int8, ONNX Model Zoo, Apache-2.0): 1280-d global-average-pooled "
        "features, 3.6 MB";
    mobilenet.card = MobilenetCard();
    models->push_back(std::move(mobilenet));
    KnownModel sift;
    sift.name = "sift-vlad";
    sift.description =
        "RootSIFT descriptors aggregated with VLAD (k=64, 8192-d): no download, learned from "
        "each collection at build time; the fallback when no network model is available";
    sift.card = SiftVladCard();
    models->push_back(std::move(sift));
    KnownModel resnet;
    resnet.name = "resnet50-int8";
    resnet.url =
        "https://github.com/onnx/models/raw/main/validated/vision/classification/resnet/"
        "model/resnet50-v1-12-int8.onnx";
    // From the Model Zoo's Git LFS pointer for that file (an LFS oid is the
    // SHA-256 of the content; size 25,816,052 bytes).
    resnet.sha256 = "c234f30975989788b4405f25253275aae247ab6dbdd34aaa69ab0a59ff76f6d0";
    resnet.description =
        "ResNet-50 v1 (ImageNet, int8, ONNX Model Zoo, Apache-2.0): 2048-d global-average-pooled "
        "features, 25.8 MB, on the libtorch engine. Its card has not been run against the file "
        "in pixseek's tests (no network there)";
    resnet.card = Resnet50Int8Card();
    models->push_back(std::move(resnet));
    return models;
  }();
  return *kModels;
}

std::string DefaultModelName() { return KnownModels().front().name; }

fs::path DefaultPixseekHome() {
  const char* home = std::getenv("PIXSEEK_HOME");
  if (home != nullptr && home[0] != '\0') return fs::path(home);
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg != nullptr && xdg[0] != '\0') return fs::path(xdg) / "pixseek";
  const char* user_home = std::getenv("HOME");
  if (user_home == nullptr || user_home[0] == '\0') {
    const passwd* pw = ::getpwuid(::getuid());
    if (pw != nullptr) user_home = pw->pw_dir;
  }
  if (user_home == nullptr || user_home[0] == '\0') return fs::path(".pixseek");
  return fs::path(user_home) / ".local" / "share" / "pixseek";
}

ModelRegistry::ModelRegistry(fs::path home) : home_(std::move(home)) {}

namespace {

// A head-only trained model runs its base model's network: the card takes
// the base's network fields (as the base is installed now) and its file,
// after checking that the base is the very network the head was trained on.
Status ResolveBaseNetwork(const ModelRegistry& registry, InstalledModel* installed) {
  const TrainedSection trained = installed->card.trained;
  const std::string name = installed->card.name;
  Result<InstalledModel> base = registry.FindBase(trained.base);
  if (!base.ok()) {
    return Status(base.status().code(), "model '" + name + "' was trained on '" + trained.base +
                                            "', which is not usable: " + base.status().message());
  }
  if (!trained.base_sha256.empty() && base->card.sha256 != trained.base_sha256) {
    return Status::FailedPrecondition(
        "model '" + name + "' was trained on '" + trained.base + "' with sha256 " +
        trained.base_sha256 + ", but the installed '" + trained.base + "' has " +
        (base->card.sha256.empty() ? std::string("none") : base->card.sha256) +
        "; install that base again or train '" + name + "' again");
  }
  const int network_dimension = base->card.dimension;
  installed->card = base->card;
  installed->card.name = name;
  installed->card.trained = trained;
  installed->card.dimension = network_dimension;
  installed->model_file = base->model_file;
  return Status::Ok();
}

}  // namespace

Result<InstalledModel> ModelRegistry::Find(const std::string& name) const {
  return Find(name, /*as_base=*/false);
}

Result<InstalledModel> ModelRegistry::FindBase(const std::string& name) const {
  return Find(name, /*as_base=*/true);
}

Result<InstalledModel> ModelRegistry::Find(const std::string& name, bool as_base) const {
  PIXSEEK_RETURN_IF_ERROR(ValidateName(name));
  InstalledModel installed;
  installed.dir = models_dir() / name;
  std::error_code ec;
  const fs::path card_path = installed.dir / kCardFile;
  if (!fs::is_regular_file(card_path, ec)) return Status::NotFound(NotInstalledMessage(name));
  Result<std::string> text = ReadTextFile(card_path);
  if (!text.ok()) return text.status();
  Result<ModelCard> card = ModelCard::FromJson(*text);
  if (!card.ok()) {
    return Status::DataLoss("model '" + name + "' has a broken " + card_path.string() + ": " +
                            card.status().message() + "; import or pull it again");
  }
  installed.card = std::move(card).value();
  // A known model's card is this pixseek's, not the one written when it was
  // installed: improvements (MobileNetV2's libtorch engine, its batch size)
  // reach earlier installs. Only for the very file the registry knows, and
  // the choices a user may make in card.json (engine, precision) stay.
  for (const KnownModel& known : KnownModels()) {
    if (known.name == name && !known.sha256.empty() && installed.card.sha256 == known.sha256 &&
        installed.card.file == known.card.file) {
      const auto written = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
      ModelCard current = known.card;
      if (written.contains("engine")) current.onnx.engine = installed.card.onnx.engine;
      if (written.contains("precision")) current.precision = installed.card.precision;
      installed.card = std::move(current);
    }
  }
  installed.card.name = name;  // the directory is the source of truth
  if (installed.card.file.empty() && !installed.card.trained.base.empty()) {
    // One level only: a head's base runs a network of its own.
    if (as_base) {
      return Status::FailedPrecondition("model '" + name +
                                        "' is a head without a network of its own and cannot "
                                        "be the base of another model");
    }
    PIXSEEK_RETURN_IF_ERROR(ResolveBaseNetwork(*this, &installed));
    return installed;
  }
  if (installed.card.file.empty()) {
    return Status::DataLoss("model '" + name + "' has no file in " + card_path.string());
  }
  installed.model_file = installed.dir / installed.card.file;
  if (!fs::is_regular_file(installed.model_file, ec)) {
    return Status::NotFound("model '" + name + "' is missing its file " +
                            installed.model_file.string() + "; " + NotInstalledMessage(name));
  }
  return installed;
}

std::vector<InstalledModel> ModelRegistry::List() const {
  std::vector<InstalledModel> out;
  std::error_code ec;
  fs::directory_iterator it(models_dir(), ec);
  if (ec) return out;
  for (const fs::directory_entry& entry : it) {
    std::error_code entry_ec;
    if (!entry.is_directory(entry_ec)) continue;
    Result<InstalledModel> model = Find(entry.path().filename().string());
    if (model.ok()) out.push_back(std::move(model).value());
  }
  std::sort(out.begin(), out.end(), [](const InstalledModel& a, const InstalledModel& b) {
    return a.card.name < b.card.name;
  });
  return out;
}

namespace {

// Writes `bytes` and `card` (name, file and sha256 already final) into
// registry `reg`. Returns the existing entry when the same model is already
// there; AlreadyExists when another model holds the name.
Result<InstalledModel> Install(const ModelRegistry& reg, const ModelCard& card,
                               std::span<const uint8_t> bytes) {
  PIXSEEK_RETURN_IF_ERROR(ValidateName(card.name));
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  if (card.file.empty() || card.file == kCardFile) {
    return Status::InvalidArgument("model card: file must name the model file, got \"" +
                                   card.file + "\"");
  }
  Result<InstalledModel> existing = reg.Find(card.name);
  if (existing.ok()) {
    if (existing->card.sha256 == card.sha256) return existing;
    return Status::AlreadyExists("model '" + card.name + "' is already installed with a different " +
                                 "file (sha256 " + existing->card.sha256 +
                                 "); choose another name");
  }
  // A missing or broken entry is replaced.
  const fs::path dir = reg.models_dir() / card.name;
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(dir));
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(dir / card.file, bytes));
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(dir / kCardFile, card.ToJson()));
  return reg.Find(card.name);
}

}  // namespace

Result<InstalledModel> ModelRegistry::Import(const fs::path& file,
                                             const std::optional<fs::path>& card_path,
                                             const std::optional<std::string>& name) {
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadAllBytes(file));
  const std::string sha = Sha256Hex(bytes);

  // Without --card, a file that is not a known model may have its card
  // beside it: FILE.json (as tools/export_model.py writes it) or card.json.
  std::optional<fs::path> card_file = card_path;
  if (!card_file.has_value() && FindKnownBySha(sha) == nullptr) {
    std::error_code ec;
    for (const fs::path& beside :
         {fs::path(file.string() + ".json"), file.parent_path() / kCardFile}) {
      if (fs::is_regular_file(beside, ec)) {
        card_file = beside;
        break;
      }
    }
  }
  ModelCard card;
  if (card_file.has_value()) {
    Result<std::string> text = ReadTextFile(*card_file);
    if (!text.ok()) return Status::NotFound("cannot read model card " + card_file->string());
    Result<ModelCard> parsed = ModelCard::FromJson(*text);
    if (!parsed.ok()) return parsed.status().WithContext(card_file->string());
    card = std::move(parsed).value();
    card.file = file.filename().string();
    if (!card.sha256.empty() && card.sha256 != sha) {
      return Status::DataLoss("checksum mismatch: expected " + card.sha256 + ", got " + sha +
                              " for " + file.string());
    }
  } else {
    const KnownModel* known = FindKnownBySha(sha);
    if (known == nullptr) {
      return Status::InvalidArgument(file.string() + " (sha256 " + sha +
                                     ") is not a known model; a model card is needed to import "
                                     "it (--card CARD.json, or FILE.json beside it)");
    }
    card = known->card;
  }
  if (name.has_value()) card.name = *name;
  if (card.name.empty()) {
    return Status::InvalidArgument("the model card has no name; give one (--name NAME)");
  }
  card.sha256 = sha;
  return Install(*this, card, bytes);
}

Result<InstalledModel> ModelRegistry::Pull(const std::string& name,
                                           const std::optional<std::string>& url_override,
                                           const DownloadProgress& progress) {
  const KnownModel* known = FindKnownByName(name);
  if (known == nullptr) {
    return Status::NotFound("unknown model '" + name + "'; known models: " + KnownNames() +
                            " (use `pixseek model import FILE --card CARD` for others)");
  }
  if (known->url.empty()) {
    return Status::InvalidArgument("model '" + name + "' has nothing to download: it is learned "
                                   "from each collection when a database is built (`pixseek "
                                   "build DIR --db DB --model " + name + "`)");
  }
  // For machines that must not (or cannot) reach the network: fail at once
  // instead of waiting for a connection timeout.
  if (const char* offline = std::getenv("PIXSEEK_OFFLINE");
      offline != nullptr && offline[0] != '\0' && std::string(offline) != "0") {
    return Status::Unavailable("cannot download model '" + name + "': PIXSEEK_OFFLINE is set");
  }
  // Already there and intact: nothing to download.
  Result<InstalledModel> existing = Find(known->name);
  if (existing.ok()) {
    if (existing->card.sha256 == known->sha256) return existing;
    return Status::AlreadyExists("model '" + known->name +
                                 "' is already installed with a different file (sha256 " +
                                 existing->card.sha256 + "); remove " + existing->dir.string() +
                                 " first");
  }

  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(models_dir()));
  const std::string url = url_override.value_or(known->url);
  const fs::path tmp =
      models_dir() / ("." + known->name + ".download-" + std::to_string(::getpid()));
  FileRemover remove_tmp(tmp);
  PIXSEEK_RETURN_IF_ERROR(Download(url, tmp, progress));

  PIXSEEK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadAllBytes(tmp));
  const std::string sha = Sha256Hex(bytes);
  if (sha != known->sha256) {
    return Status::DataLoss("checksum mismatch: expected " + known->sha256 + ", got " + sha +
                            " (downloaded from " + url + ")");
  }
  ModelCard card = known->card;
  card.sha256 = sha;
  return Install(*this, card, bytes);
}

}  // namespace pixseek

namespace pixseek {

Result<std::filesystem::path> ModelRegistry::Stage(const std::string& name) const {
  PIXSEEK_RETURN_IF_ERROR(ValidateName(name));
  std::error_code ec;
  if (fs::exists(models_dir() / name, ec)) {
    return Status::AlreadyExists("a model called '" + name +
                                 "' is already installed; choose another --name");
  }
  // A dot-name is never listed (ValidateName refuses it), and a stale one
  // from a killed run is replaced.
  const fs::path staged = models_dir() / ("." + name + ".partial");
  fs::remove_all(staged, ec);
  PIXSEEK_RETURN_IF_ERROR(EnsureDirectory(staged));
  return staged;
}

Result<InstalledModel> ModelRegistry::InstallStaged(const ModelCard& card,
                                                    const fs::path& staged) const {
  PIXSEEK_RETURN_IF_ERROR(ValidateName(card.name));
  PIXSEEK_RETURN_IF_ERROR(card.Validate());
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(staged / kCardFile, card.ToJson()));
  const fs::path target = models_dir() / card.name;
  std::error_code ec;
  if (fs::exists(target, ec)) {
    return Status::AlreadyExists("a model called '" + card.name + "' is already installed");
  }
  fs::rename(staged, target, ec);
  if (ec) return Status::Internal("cannot install " + target.string() + ": " + ec.message());
  PIXSEEK_RETURN_IF_ERROR(SyncDirectory(models_dir()));
  return Find(card.name);
}

}  // namespace pixseek
