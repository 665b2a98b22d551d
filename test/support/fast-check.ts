/**
 * Property tests explore new random inputs on every local run. With FC_SEED set
 * (CI sets it from the commit), every fast-check property starts from that seed,
 * so a commit's CI result does not depend on luck and a failure replays exactly.
 */
import fc from 'fast-check';

const seed = process.env.FC_SEED;
if (seed !== undefined && seed !== '') fc.configureGlobal({ seed: Number(seed) });
