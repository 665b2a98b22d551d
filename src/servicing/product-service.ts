/** The product catalogue: versioned loan products. A loan copies the terms of the version it is booked on. */
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import { AppError } from '../platform/errors.js';
import { inTransactionWithRetry } from '../platform/retry.js';
import type { Product, ProductTerms } from './model.js';
import { checkProductTerms, productTermsFromJson, termsToJson } from './products.js';
import * as repo from './repository.js';
import type { ServicingDb } from './repository.js';

export function productOf(row: { id: string; version: number; code: string; name: string; terms: unknown; created_at: Date }): Product {
  return { id: row.id, version: row.version, code: row.code, name: row.name, terms: productTermsFromJson(row.terms), createdAt: row.created_at };
}

export type ProductService = ReturnType<typeof createProductService>;

export function createProductService<DB extends ServicingDb>(deps: { readonly db: Kysely<DB> }) {
  // Kysely types are invariant in the table map: the catalogue sees its own tables.
  const sdb = deps.db as unknown as Kysely<ServicingDb>;

  return {
    async createProduct(input: { code: string; name: string; terms: ProductTerms }, actorId: string | null): Promise<Product> {
      checkProductTerms(input.terms);
      if (await repo.findProductIdByCode(sdb, input.code)) throw new AppError('product_code_taken');
      try {
        return productOf(await repo.insertProduct(sdb, { id: randomUUID(), version: 1, code: input.code, name: input.name, currency: input.terms.currency, terms: termsToJson(input.terms), created_by: actorId }));
      } catch (error) {
        if ((error as { code?: string }).code === '23505') throw new AppError('product_code_taken');
        throw error;
      }
    },

    /** Publishes a new version; loans already booked keep theirs. */
    async newProductVersion(id: string, input: { name: string; terms: ProductTerms }, actorId: string | null): Promise<Product> {
      checkProductTerms(input.terms);
      return inTransactionWithRetry(sdb, async (trx) => {
        const latest = await repo.findProduct(trx, id);
        if (!latest) throw new AppError('product_not_found');
        try {
          return productOf(await repo.insertProduct(trx, { id, version: latest.version + 1, code: latest.code, name: input.name, currency: input.terms.currency, terms: termsToJson(input.terms), created_by: actorId }));
        } catch (error) {
          // Two new versions at once: one wins, the other is told to retry against the new latest.
          if ((error as { code?: string }).code === '23505') throw new AppError('product_code_taken', { detail: 'Another version was published at the same time; read the product and try again.' });
          throw error;
        }
      });
    },

    async product(id: string, version?: number): Promise<Product> {
      const row = await repo.findProduct(sdb, id, version);
      if (!row) throw new AppError('product_not_found');
      return productOf(row);
    },

    async productVersions(id: string): Promise<Product[]> {
      const rows = await repo.productVersions(sdb, id);
      if (rows.length === 0) throw new AppError('product_not_found');
      return rows.map(productOf);
    },

    async products(filter: { limit: number; startingAfter?: string | undefined }): Promise<{ data: Product[]; hasMore: boolean }> {
      let afterCode: string | undefined;
      if (filter.startingAfter !== undefined) {
        const after = await repo.findProduct(sdb, filter.startingAfter);
        if (!after) throw new AppError('product_not_found', { detail: 'starting_after names no product' });
        afterCode = after.code;
      }
      const rows = await repo.listProducts(sdb, { limit: filter.limit + 1, afterCode });
      return { data: rows.slice(0, filter.limit).map(productOf), hasMore: rows.length > filter.limit };
    },

  };
}
