import { inject } from '@angular/core';
import { CanActivateFn, Router, Routes } from '@angular/router';
import { AuthStore } from './core/auth.store';

/** Pages behind sign-in: a stored key is re-checked once per page load. */
export const authGuard: CanActivateFn = async () => {
  const auth = inject(AuthStore);
  const router = inject(Router);
  if (auth.signedIn()) return true;
  if (auth.hasKey() && (await auth.restore())) return true;
  return router.createUrlTree(['/sign-in']);
};

export const routes: Routes = [
  {
    path: 'sign-in',
    title: 'Sign in · bkg admin',
    loadComponent: () => import('./pages/sign-in').then((m) => m.SignInPage),
  },
  {
    path: '',
    canActivate: [authGuard],
    children: [
      { path: '', pathMatch: 'full', title: 'Plugins · bkg admin', loadComponent: () => import('./pages/dashboard').then((m) => m.DashboardPage) },
      {
        path: 'plugins/:id',
        title: 'Plugin · bkg admin',
        loadComponent: () => import('./pages/plugin-detail').then((m) => m.PluginDetailPage),
      },
      {
        path: 'keys',
        title: 'API keys · bkg admin',
        loadComponent: () => import('./pages/keys').then((m) => m.KeysPage),
      },
      {
        path: 'playground',
        title: 'Playground · bkg admin',
        loadComponent: () => import('./pages/playground').then((m) => m.PlaygroundPage),
      },
    ],
  },
  { path: '**', redirectTo: '' },
];
