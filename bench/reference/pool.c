/*
 * Reference for bench/pool.ts: the same deterministic heterogeneous pool and the same
 * SIFMA Standard Formulas projection (Chapter SF, B.1/B.2 amortization and PSA, C.3 default
 * formulas, C.4 SDA) as src/engine/projection.ts, in plain C doubles, single-threaded.
 *
 *   gcc -O2 -o pool bench/reference/pool.c -lm
 *   ./pool LOANS MONTHS ROUNDS
 *
 * Prints one JSON line: loan-months projected, the wall and CPU seconds of each round
 * (projection only, not pool generation), and the 12 aggregate columns summed over all months, in the order
 * of TOTALS_LAYOUT in src/engine/projection.ts.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WIDTH 12

/* Assumptions: 150 % PSA, 100 % SDA, severity 0.35, 12 months to liquidation, P&I advanced,
   no defaults in the last 12 months, servicing fee 25 bp. Must match bench/pool.ts. */
static const double PSA = 150.0, SDA = 100.0, SEVERITY = 0.35, FEE = 0.0025;
static const int LAG = 12, STOP = 12, ADVANCES = 1;

/* The pool generator of bench/pool.ts: a 32-bit integer hash of (loan, field). */
static uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

static double uniform(uint32_t loan, uint32_t field) { return (double)hash32(loan * 4U + field + 0x9e3779b9U) / 4294967296.0; }

static void generate(int n, double *balance, double *rate, double *term, double *age) {
  for (int i = 0; i < n; i++) {
    balance[i] = 50000.0 + floor(uniform((uint32_t)i, 0) * 75000000.0) / 100.0;
    rate[i] = (300.0 + floor(uniform((uint32_t)i, 1) * 600.0)) / 10000.0;
    double original = uniform((uint32_t)i, 2) < 0.25 ? 180.0 : 360.0;
    term[i] = 1.0 + floor(uniform((uint32_t)i, 3) * original);
    age[i] = original - term[i];
  }
}

static double cpr_to_smm(double cpr) { return 1.0 - pow(1.0 - cpr, 1.0 / 12.0); }

static double psa_cpr(double speed, int month) {
  double m = month < 1 ? 1 : (month > 30 ? 30 : month);
  double cpr = (speed / 100.0) * 0.002 * m;
  return cpr < 1.0 ? cpr : 1.0;
}

static double sda_cdr(double speed, int month) {
  int m = month < 1 ? 1 : month;
  double base;
  if (m <= 30) base = 0.0002 * m;
  else if (m <= 60) base = 0.006;
  else if (m <= 120) base = 0.006 - 0.000095 * (m - 60);
  else base = 0.0003;
  double cdr = (speed / 100.0) * base;
  return cdr < 1.0 ? cdr : 1.0;
}

static double clock_seconds(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void project(int n, const double *balance, const double *rate, const double *remaining, const double *age, int months,
                    const double *smm_curve, const double *mdr_curve, double *out) {
  double ring_defaults[LAG + 1], ring_schedule[LAG + 1];
  const int ring = LAG + 1;
  for (int k = 0; k < n; k++) {
    double perf = balance[k];
    if (perf == 0) continue;
    double c = rate[k] / 12.0;
    double net = (rate[k] - FEE) / 12.0;
    int term = (int)remaining[k];
    int loan_age = (int)age[k];
    int last = term < months ? term : months;
    int last_default_month = term - STOP;
    double v = 1.0 / (1.0 + c);
    double growth = c > 0 ? pow(1.0 + c, term) : 1.0;
    double fcl = 0, schedule = 1;
    int write = 0, read = ring == 1 ? 0 : 1;
    for (int i = 1; i <= last; i++) {
      int left = term - i + 1;
      double f = left == 1 ? 1.0 : left <= 0 ? 0.0 : c > 0 ? c / (growth - 1.0) : 1.0 / left;
      growth *= v;
      int month = loan_age + i;
      double smm = smm_curve[month];
      if (smm > 1) smm = 1;
      double mdr = 0;
      if (i <= last_default_month) {
        mdr = mdr_curve[month];
        if (mdr > 1) mdr = 1;
      }
      double new_defaults = perf * mdr;
      ring_defaults[write] = new_defaults;
      ring_schedule[write] = schedule;
      double adb = 0, loss = 0;
      if (i > LAG) {
        double defaulted = ring_defaults[read];
        if (defaulted != 0) {
          adb = ADVANCES ? defaulted * (schedule / ring_schedule[read]) : defaulted;
          loss = defaulted * SEVERITY;
          if (loss > adb) loss = adb;
        }
      }
      if (++write == ring) write = 0;
      if (++read == ring) read = 0;
      double actual_amortization = (perf - new_defaults) * f;
      double defaulted_amortization = (new_defaults + fcl - adb) * f;
      double prepayment_base = perf * (1 - f);
      double prepayments = prepayment_base * smm;
      if (actual_amortization + new_defaults + prepayments > perf) {
        prepayments = perf - actual_amortization - new_defaults;
        if (prepayments < 0) prepayments = 0;
      }
      double accruing = perf + fcl;
      double *row = out + (size_t)(i - 1) * WIDTH;
      double next_perf = perf - new_defaults - prepayments - actual_amortization;
      if (next_perf < 0) next_perf = 0;
      double next_fcl = ADVANCES ? new_defaults + fcl - adb - defaulted_amortization : new_defaults + fcl - adb;
      if (next_fcl < 0) next_fcl = 0;
      row[0] += next_perf;
      row[1] += next_fcl;
      row[2] += new_defaults;
      row[3] += defaulted_amortization;
      row[4] += prepayments;
      row[5] += actual_amortization;
      row[6] += accruing * c;
      row[7] += accruing * net;
      row[8] += (new_defaults + fcl) * net;
      row[9] += adb - loss;
      row[10] += loss;
      row[11] += prepayment_base;
      perf = next_perf;
      fcl = next_fcl;
      schedule *= 1 - f;
    }
  }
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000000;
  int horizon = argc > 2 ? atoi(argv[2]) : 360;
  int rounds = argc > 3 ? atoi(argv[3]) : 3;
  if (n < 1 || horizon < 1 || rounds < 1) {
    fprintf(stderr, "usage: pool LOANS MONTHS ROUNDS\n");
    return 2;
  }
  double *balance = malloc(sizeof(double) * n), *rate = malloc(sizeof(double) * n);
  double *term = malloc(sizeof(double) * n), *age = malloc(sizeof(double) * n);
  generate(n, balance, rate, term, age);
  int max_term = 0, max_age = 0;
  long long loan_months = 0;
  for (int i = 0; i < n; i++) {
    if ((int)term[i] > max_term) max_term = (int)term[i];
    if ((int)age[i] > max_age) max_age = (int)age[i];
  }
  int months = max_term < horizon ? max_term : horizon;
  for (int i = 0; i < n; i++) loan_months += (int)term[i] < months ? (int)term[i] : months;
  int max_month = max_age + months;
  double *smm_curve = calloc(max_month + 1, sizeof(double)), *mdr_curve = calloc(max_month + 1, sizeof(double));
  for (int m = 1; m <= max_month; m++) {
    smm_curve[m] = cpr_to_smm(psa_cpr(PSA, m));
    mdr_curve[m] = cpr_to_smm(sda_cdr(SDA, m));
  }
  double *out = calloc((size_t)months * WIDTH, sizeof(double));
  double *wall = calloc(rounds, sizeof(double)), *cpu = calloc(rounds, sizeof(double));
  for (int r = 0; r < rounds; r++) {
    memset(out, 0, sizeof(double) * (size_t)months * WIDTH);
    double start = clock_seconds(CLOCK_MONOTONIC), start_cpu = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
    project(n, balance, rate, term, age, months, smm_curve, mdr_curve, out);
    wall[r] = clock_seconds(CLOCK_MONOTONIC) - start;
    cpu[r] = clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - start_cpu;
  }
  printf("{\"loans\":%d,\"months\":%d,\"loan_months\":%lld,\"seconds\":[", n, months, loan_months);
  for (int r = 0; r < rounds; r++) printf("%s%.6f", r ? "," : "", wall[r]);
  printf("],\"cpu_seconds\":[");
  for (int r = 0; r < rounds; r++) printf("%s%.6f", r ? "," : "", cpu[r]);
  printf("],\"sums\":[");
  for (int j = 0; j < WIDTH; j++) {
    double sum = 0;
    for (int t = 0; t < months; t++) sum += out[(size_t)t * WIDTH + j];
    printf("%s%.17g", j ? "," : "", sum);
  }
  printf("]}\n");
  return 0;
}
