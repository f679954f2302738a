// See column_shuffle.h.
#include "common/column_shuffle.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

namespace wtc {

uint64_t cpu_permutation_seed(const std::optional<at::Generator>& generator) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(
      generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  return gen->random64();
}

const c10::TypedOperatorHandle<PermuteDimsSignature>& permute_dims_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::permute_dims", "")
                             .typed<PermuteDimsSignature>();
  return op;
}

}  // namespace wtc
