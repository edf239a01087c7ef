// The baseline (16-byte vectors: SSE2, NEON) builds of the scan with double accumulation (scan_builds.h).
#include "scan_builds.h"

namespace sae {
namespace cpu {

const ScanBuilds kBaseDouble = SAE_SCAN_BUILDS(scan_rows_base, walk_chained_base, double);

}  // namespace cpu
}  // namespace sae
