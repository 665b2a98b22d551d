import { EngineError } from './errors.js';

/**
 * ISO 4217 minor units (the number of decimal places of the currency's minor
 * unit), from the ISO 4217 "List One" of current currency codes. Funds codes and
 * precious metals (no minor unit) are left out on purpose: a loan is not booked
 * in XAU.
 */
const ZERO_DECIMALS = ['BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF', 'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF'];
const THREE_DECIMALS = ['BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND'];
const FOUR_DECIMALS = ['CLF', 'UYW'];
const TWO_DECIMALS = (
  'AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CNY ' +
  'COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ' +
  'ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK ' +
  'MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP ' +
  'SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR ' +
  'ZMW ZWG'
).split(' ');

const MINOR_UNITS: ReadonlyMap<string, number> = new Map([
  ...ZERO_DECIMALS.map((code) => [code, 0] as const),
  ...TWO_DECIMALS.map((code) => [code, 2] as const),
  ...THREE_DECIMALS.map((code) => [code, 3] as const),
  ...FOUR_DECIMALS.map((code) => [code, 4] as const),
]);

export function isCurrency(code: unknown): code is string {
  return typeof code === 'string' && MINOR_UNITS.has(code);
}

/** Decimal places of the currency's minor unit: USD 2, JPY 0, KWD 3. */
export function minorUnits(currency: string): number {
  const places = MINOR_UNITS.get(currency);
  if (places === undefined) {
    throw new EngineError('unknown_currency', `${currency} is not an ISO 4217 currency code with a minor unit`, 'currency');
  }
  return places;
}

/** Every supported currency code, sorted. */
export function currencies(): string[] {
  return [...MINOR_UNITS.keys()].sort();
}
