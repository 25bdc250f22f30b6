// TrainModel: the labelled images of a database, split and carved for
// validation, handed to src/train's trainers, and the learned model
// installed in the registry with a card that says what it was trained on.
#include "pixseek/train_service.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/files.h"
#include "core/hash.h"
#include "pixseek/model_registry.h"
#include "pixseek/trained_head.h"
#include "service/fit.h"
#include "service/indexing.h"

namespace pixseek {
namespace {

constexpr char kHeadFile[] = "head.bin";
constexpr char kNetworkFile[] = "network.pt";

struct TrainParts {
  std::vector<LabelledImage> train, validation;
};

std::vector<std::string> ClassesOf(const std::vector<LabelledImage>& images) {
  std::set<std::string> classes;
  for (const LabelledImage& image : images) classes.insert(image.label);
  return {classes.begin(), classes.end()};
}

// Validation mirrors the split: held-out classes when the split is by
// classes (so that early stopping asks "does this help on classes it never
// saw?"), held-out images of the training classes otherwise.
Result<TrainParts> CarveValidation(const std::vector<LabelledImage>& pool, DataSplit split,
                                   double fraction) {
  TrainParts parts;
  const std::vector<std::string> classes = ClassesOf(pool);
  if (split == DataSplit::kClasses) {
    const auto c = static_cast<long>(classes.size());
    long validating = std::max(2L, std::lround(fraction * static_cast<double>(c)));
    if (c - validating < 2) {
      return Status::FailedPrecondition(
          "--split classes leaves " + std::to_string(c) +
          " classes to train on; validating on held-out classes needs at least 4 (2 to learn "
          "from, 2 to validate on)");
    }
    const std::set<std::string> held(classes.end() - validating, classes.end());
    for (const LabelledImage& image : pool) {
      (held.count(image.label) ? parts.validation : parts.train).push_back(image);
    }
    return parts;
  }
  // Each class of 4 or more images lends `fraction` of them (at least 2, so
  // that every validation image has a relevant one), spread evenly over its
  // path order; smaller classes only train.
  std::map<std::string, std::vector<const LabelledImage*>> by_class;
  for (const LabelledImage& image : pool) by_class[image.label].push_back(&image);
  for (const auto& [label, images] : by_class) {
    const size_t n = images.size();
    const size_t held = n < 4 ? 0 : std::max<size_t>(2, std::lround(fraction * double(n)));
    std::vector<bool> validates(n, false);
    for (size_t j = 0; j < held; ++j) validates[(2 * j + 1) * n / (2 * held)] = true;
    for (size_t i = 0; i < n; ++i) {
      (validates[i] ? parts.validation : parts.train).push_back(*images[i]);
    }
  }
  return parts;
}

// The base features of `images` (rows in their order) with class indices
// from `classes` (a label not in it gets the next free index).
LabelledFeatures FeaturesOf(const std::vector<LabelledImage>& images,
                                    const std::unordered_map<int64_t, size_t>& row_of,
                                    const std::vector<float>& features, int dimension,
                                    std::map<std::string, int32_t>* class_index) {
  LabelledFeatures out;
  out.dimension = dimension;
  const auto d = static_cast<size_t>(dimension);
  out.features.reserve(images.size() * d);
  for (const LabelledImage& image : images) {
    auto row = row_of.find(image.id);
    if (row == row_of.end()) continue;  // counted by the caller
    const float* f = features.data() + row->second * d;
    out.features.insert(out.features.end(), f, f + d);
    auto [it, added] =
        class_index->emplace(image.label, static_cast<int32_t>(class_index->size()));
    out.labels.push_back(it->second);
  }
  return out;
}

// A hash of what training saw: each training image's label, path and base
// feature, in path order.
std::string DataHash(const std::vector<LabelledImage>& images,
                     const std::unordered_map<int64_t, size_t>& row_of,
                     const std::vector<float>& features, int dimension) {
  std::string bytes;
  const auto d = static_cast<size_t>(dimension);
  for (const LabelledImage& image : images) {
    bytes += image.label + '\t' + image.path + '\n';
    if (auto row = row_of.find(image.id); row != row_of.end()) {
      bytes.append(reinterpret_cast<const char*>(features.data() + row->second * d),
                   d * sizeof(float));
    }
  }
  return Sha256Hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

// The installed model whose network gives the database's base features.
Result<InstalledModel> BaseNetwork(const Database& db, const ModelRegistry& registry) {
  const ModelCard& card = db.card();
  if (LearnsPerCollection(card)) {
    return Status::FailedPrecondition(
        "model '" + db.model_name() +
        "' is learned per database (sift-vlad) and has no network to train on; build the "
        "database with a network model (e.g. --model mobilenetv2)");
  }
  // A model with a trained head runs its base's network: train on that.
  const std::string name = card.trained.head.empty() ? db.model_name() : card.trained.base;
  return registry.Find(name);
}

void PrintEpoch(std::FILE* out, const EpochReport& e) {
  if (e.epoch == 0) {
    std::fprintf(out, "train: base features: validation mAP %.4f\n", e.validation_map);
    return;
  }
  std::fprintf(out,
               "train: epoch %d/%d  loss %.4f  validation mAP %.4f (best %.4f)  %.0f/s  "
               "ETA %.0f s\n",
               e.epoch, e.epochs, e.loss, e.validation_map, e.best_validation_map,
               e.rows_per_second, e.eta_s);
  std::fflush(out);
}

nlohmann::ordered_json TrainingJson(const TrainRequest& request, const TrainReport& report,
                                    const std::vector<std::string>& classes,
                                    const std::filesystem::path& db_dir) {
  const MetricTrainOptions& m = request.metric;
  nlohmann::ordered_json j;
  j["fine_tune"] = request.fine_tune == FineTune::kHead ? "head" : "backbone";
  j["loss"] = std::string(ToString(m.loss));
  j["margin"] = m.margin > 0 ? m.margin : DefaultMargin(m.loss);
  j["xbm"] = m.xbm;
  j["koleo"] = m.koleo;
  j["dimension"] = m.dimension;
  j["epochs"] = m.epochs;
  j["batch_classes"] = m.batch_classes;
  j["per_class"] = m.per_class;
  j["learning_rate"] = m.learning_rate;
  j["seed"] = m.seed;
  j["split"] = std::string(ToString(request.split));
  j["validation_fraction"] = request.validation_fraction;
  j["database"] = db_dir.string();
  j["data_sha256"] = report.data_sha256;
  j["train_images"] = report.train_images;
  j["validation_images"] = report.validation_images;
  j["classes"] = classes;
  j["epochs_run"] = report.epochs;
  j["best_epoch"] = report.best_epoch;
  j["keeps_base"] = report.keeps_base;
  j["validation_gain_lower_bound"] = report.validation_gain_lower_bound;
  j["validation_map_before"] = report.validation_map_before;
  j["validation_map_after"] = report.validation_map_after;
  j["classifier_accuracy"] = report.classifier_accuracy;
  j["trained_at"] = static_cast<int64_t>(std::time(nullptr));
  return j;
}

// The learned head as its file: the projection (none when the base
// features were kept) and the classifier over the training classes.
Result<std::string> HeadBytes(const HeadTrainResult& result,
                              const std::vector<std::string>& classes) {
  HeadParameters p;
  p.input_dimension = result.input_dimension;
  if (!result.keeps_base) {
    p.output_dimension = result.output_dimension;
    p.a = result.a;
    p.b = result.b;
  }
  if (result.classes >= 2) {
    p.labels.assign(classes.begin(), classes.begin() + result.classes);
    p.classifier_w = result.classifier_w;
    p.classifier_b = result.classifier_b;
  }
  PIXSEEK_ASSIGN_OR_RETURN(TrainedHead head, TrainedHead::FromParameters(std::move(p)));
  return head.Serialize();
}

Result<std::string> FileSha256(const std::filesystem::path& file) {
  PIXSEEK_ASSIGN_OR_RETURN(std::string bytes, ReadTextFile(file));
  return Sha256Hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

// Everything TrainModel gathers before it trains.
struct TrainingData {
  InstalledModel base;
  TrainParts parts;
  LabelledFeatures train, validation;
  std::vector<std::string> classes;  // by class index: training classes first
};

Result<TrainingData> Gather(Database& db, const TrainRequest& request,
                            const ModelRegistry& registry, TrainReport* report) {
  TrainingData data;
  PIXSEEK_ASSIGN_OR_RETURN(data.base, BaseNetwork(db, registry));
  PIXSEEK_ASSIGN_OR_RETURN(std::vector<LabelledImage> labelled,
                           ListLabelledImages(db.store(), request.root));
  const SplitParts split = SplitLabelled(labelled, request.split);
  PIXSEEK_ASSIGN_OR_RETURN(data.parts,
                           CarveValidation(split.train, request.split,
                                           request.validation_fraction));
  if (ClassesOf(data.parts.train).size() < 2 || data.parts.validation.size() < 2) {
    return Status::FailedPrecondition(
        "too little labelled data under " + request.root.string() + ": " +
        std::to_string(labelled.size()) +
        " stored images in labelled folders; training needs at least 2 classes with images "
        "to learn from and some to validate on");
  }
  // Base features, read once for every labelled image.
  const int dimension = db.base_dimension();
  std::unordered_map<int64_t, size_t> row_of;
  std::vector<float> features;
  std::set<int64_t> wanted;
  for (const LabelledImage& image : labelled) wanted.insert(image.id);
  PIXSEEK_RETURN_IF_ERROR(db.store().ScanFeatures(
      dimension, [&](std::span<const int64_t> ids, std::span<const float> rows) {
        for (size_t i = 0; i < ids.size(); ++i) {
          if (!wanted.count(ids[i])) continue;
          row_of.emplace(ids[i], row_of.size());
          const float* row = rows.data() + i * static_cast<size_t>(dimension);
          features.insert(features.end(), row, row + dimension);
        }
        return Status::Ok();
      }));
  if (request.fine_tune == FineTune::kHead && row_of.size() < wanted.size()) {
    return Status::FailedPrecondition(
        std::to_string(wanted.size() - row_of.size()) + " of " + std::to_string(wanted.size()) +
        " labelled images have no stored base feature (stored before pixseek kept them); run "
        "`pixseek reindex --db " + db.dir().string() + " --model " + db.model_name() +
        "` once to embed them again");
  }
  std::map<std::string, int32_t> class_index;
  for (const std::string& c : ClassesOf(data.parts.train)) {
    class_index.emplace(c, static_cast<int32_t>(class_index.size()));
  }
  data.train = FeaturesOf(data.parts.train, row_of, features, dimension, &class_index);
  data.validation = FeaturesOf(data.parts.validation, row_of, features, dimension, &class_index);
  data.classes.resize(class_index.size());
  for (const auto& [label, index] : class_index) data.classes[static_cast<size_t>(index)] = label;
  report->data_sha256 = DataHash(data.parts.train, row_of, features, dimension);
  report->train_images = data.parts.train.size();
  report->validation_images = data.parts.validation.size();
  report->classes = static_cast<int>(ClassesOf(data.parts.train).size());
  return data;
}

// The card of a trained model: the base network's, with what training made.
ModelCard TrainedCard(const InstalledModel& base, const std::string& name) {
  ModelCard card = base.card;
  card.name = name;
  card.trained = TrainedSection{};
  card.trained.base = base.card.name;
  card.trained.base_sha256 = base.card.sha256;
  return card;
}

// What the head and the backbone trainers report alike.
template <typename TrainResult>
void CopyOutcome(const TrainResult& result, TrainReport* report) {
  report->epochs = result.epochs_run;
  report->best_epoch = result.best_epoch;
  report->validation_map_before = result.validation_map_base;
  report->validation_map_after = result.validation_map_best;
  report->keeps_base = result.keeps_base;
  report->cancelled = result.cancelled;
  report->history = result.history;
}

Status TrainHeadInto(const TrainingData& data, const TrainRequest& request,
                     const std::filesystem::path& staged, ModelCard* card, TrainReport* report) {
  PIXSEEK_ASSIGN_OR_RETURN(HeadTrainResult result,
                           TrainHead(data.train, data.validation, request.metric));
  PIXSEEK_ASSIGN_OR_RETURN(std::string bytes, HeadBytes(result, data.classes));
  PIXSEEK_RETURN_IF_ERROR(WriteFileAtomic(staged / kHeadFile, bytes));
  card->file.clear();  // a head runs its base's network
  card->trained.head = kHeadFile;
  card->trained.head_sha256 =
      Sha256Hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  CopyOutcome(result, report);
  report->validation_gain_lower_bound = result.validation_gain_lower_bound;
  report->classifier_accuracy = result.classifier_accuracy;
  return Status::Ok();
}

LabelledImages ImagesOf(const std::vector<LabelledImage>& images, const LabelledFeatures& rows,
                        const DecodeOptions& decode) {
  LabelledImages out;
  out.size = images.size();
  out.labels = rows.labels;
  out.decode = [&images, decode](size_t i) { return DecodeFile(images[i].path, decode); };
  return out;
}

Status TrainBackboneInto(const TrainingData& data, const TrainRequest& request,
                         const DecodeLimits& limits, const std::filesystem::path& staged,
                         ModelCard* card, TrainReport* report) {
  const DecodeOptions decode = DecodeOptionsFor(data.base.card, limits);
  BackboneTrainOptions options;
  options.metric = request.metric;
  options.trainable_blocks = request.trainable_blocks;
  options.learning_rate = request.backbone_learning_rate;
  options.on_estimate = [&request](double epoch_seconds, double images_per_second) {
    std::fprintf(request.progress_out,
                 "train: about %.0f s per epoch (%.1f images/s on this machine), at most %.0f s "
                 "for %d epochs\n",
                 epoch_seconds, images_per_second, epoch_seconds * request.metric.epochs,
                 request.metric.epochs);
  };
  PIXSEEK_ASSIGN_OR_RETURN(
      BackboneTrainResult result,
      TrainBackbone(data.base.card, data.base.model_file,
                    ImagesOf(data.parts.train, data.train, decode),
                    ImagesOf(data.parts.validation, data.validation, decode), options,
                    staged / kNetworkFile));
  CopyOutcome(result, report);
  if (result.keeps_base) {
    return Status::FailedPrecondition(
        "fine-tuning never beat the base network on the validation images (mAP " +
        std::to_string(result.validation_map_base) + "); no model was written");
  }
  card->runtime = Runtime::kTorchScript;
  card->file = kNetworkFile;
  PIXSEEK_ASSIGN_OR_RETURN(card->sha256, FileSha256(staged / kNetworkFile));
  return Status::Ok();
}

}  // namespace

Result<FineTune> ParseFineTune(std::string_view name) {
  if (name == "head") return FineTune::kHead;
  if (name == "backbone") return FineTune::kBackbone;
  return Status::InvalidArgument("unknown --fine-tune '" + std::string(name) +
                                 "' (head or backbone)");
}

Result<TrainReport> TrainModel(Database& db, const TrainRequest& request,
                               const std::atomic<bool>* cancel) {
  const auto start = std::chrono::steady_clock::now();
  TrainReport report;
  report.model = request.name;
  report.loss = std::string(ToString(request.metric.loss));
  report.fine_tune = request.fine_tune;
  report.split = request.split;
  ModelRegistry registry(db.options().home);
  PIXSEEK_ASSIGN_OR_RETURN(TrainingData data, Gather(db, request, registry, &report));
  report.base_model = data.base.card.name;
  PIXSEEK_ASSIGN_OR_RETURN(std::filesystem::path staged, registry.Stage(request.name));

  TrainRequest run = request;
  run.metric.cancel = cancel;
  run.metric.dimension = std::min(run.metric.dimension, db.base_dimension());
  const auto user_callback = request.metric.on_epoch;
  run.metric.on_epoch = [&run, user_callback](const EpochReport& e) {
    if (run.show_progress) PrintEpoch(run.progress_out, e);
    if (user_callback) user_callback(e);
  };
  ModelCard card = TrainedCard(data.base, request.name);
  Status trained = request.fine_tune == FineTune::kHead
                       ? TrainHeadInto(data, run, staged, &card, &report)
                       : TrainBackboneInto(data, run, db.options().limits, staged, &card, &report);
  if (trained.ok()) {
    report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    card.trained.training = TrainingJson(run, report, data.classes, db.dir()).dump();
    Result<InstalledModel> installed = registry.InstallStaged(card, staged);
    trained = installed.status();
  }
  if (!trained.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(staged, ec);
    return trained;
  }
  return report;
}

}  // namespace pixseek
