// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.loanbook/**', 'coverage/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      // Fastify hooks and store ports are async by contract even when an implementation is not.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-syntax': [
        'error',
        { selector: 'ExportDefaultDeclaration', message: 'Use named exports.' },
      ],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/platform/config.ts'],
    rules: {
      'no-restricted-properties': [
        'error',
        { object: 'process', property: 'env', message: 'Read configuration through src/platform/config.ts.' },
      ],
    },
  },
  {
    files: ['src/engine/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['node:*', '../*', '!../engine/*', 'pg', 'kysely', 'fastify', 'pino', 'ioredis', 'zod'],
              message: 'The engine is pure: no I/O and nothing from other parts.',
            },
          ],
        },
      ],
      // No clock, randomness, environment or logging: every input is an argument.
      'no-restricted-globals': [
        'error',
        ...['Date', 'process', 'console', 'performance', 'setTimeout', 'setInterval', 'fetch', 'crypto'].map((name) => ({
          name,
          message: 'The engine is pure: take the value as an argument.',
        })),
      ],
      'no-restricted-properties': ['error', { object: 'Math', property: 'random', message: 'The engine is deterministic: take a seed.' }],
    },
  },
  {
    files: ['src/platform/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['../identity/*', '../servicing/*', '../origination/*', '../ledger/*', '../forecasting/*'], message: 'platform knows no domain.' }] },
      ],
    },
  },
  {
    files: ['eslint.config.js', 'vitest.config.ts'],
    rules: { 'no-restricted-syntax': 'off' },
  },
);
